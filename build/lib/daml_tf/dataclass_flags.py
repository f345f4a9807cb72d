"""absl flags generated from a frozen dataclass: one flag per field, its help written once.

A command's options are one frozen dataclass whose fields carry their help text
(`option(default, help)`); `define_flags` makes the flags, `config_from_flags` the frozen config
of the parsed values. Nothing is read at import time.

Example:
  @dataclasses.dataclass(frozen=True)
  class ServeConfig:
    config: str = option(None, "The YAML file.", required=True)
    duration_s: float = option(0.0, "Stop after this many seconds (0: never).")

  define_flags(ServeConfig)            # in `if __name__ == "__main__":`
  cfg = config_from_flags(ServeConfig)  # in main
"""

import dataclasses
import typing
from typing import Any, Type, TypeVar

from absl import flags

T = TypeVar("T")
_DEFINERS = {str: flags.DEFINE_string, int: flags.DEFINE_integer,
             float: flags.DEFINE_float, bool: flags.DEFINE_bool}


def option(default: Any, help_text: str, required: bool = False) -> Any:
  """A dataclass field that is also a flag; `required`: the flag must be given."""
  if required:
    return dataclasses.field(metadata={"help": help_text})
  return dataclasses.field(default=default, metadata={"help": help_text})


def _flag_type(hint) -> type:
  """The flag type of a field's annotation (Optional[X]: X)."""
  if typing.get_origin(hint) is typing.Union:
    (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
  return hint


def define_flags(config_class: Type[Any], flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines one flag per field of config_class (idempotent); a field without a default is a
  required flag."""
  hints = typing.get_type_hints(config_class)
  for field in dataclasses.fields(config_class):
    if field.name in flag_values:
      continue
    required = field.default is dataclasses.MISSING
    _DEFINERS[_flag_type(hints[field.name])](
        field.name, None if required else field.default, field.metadata["help"],
        flag_values=flag_values)
    if required:
      flags.mark_flag_as_required(field.name, flag_values=flag_values)


def config_from_flags(config_class: Type[T], flag_values: flags.FlagValues = flags.FLAGS) -> T:
  """The frozen config of the parsed flags (its __post_init__ validates them)."""
  return config_class(**{field.name: flag_values[field.name].value
                         for field in dataclasses.fields(config_class)})
