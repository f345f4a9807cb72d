"""absl flags generated from a frozen dataclass: one flag per field, its help written once.

A command's options are one frozen dataclass whose fields carry their help text
(`option(default, help)`); `define_flags` makes the flags, `config_from_flags` the frozen config
of the parsed values. Nothing is read at import time.

Example:
  @dataclasses.dataclass(frozen=True)
  class ServeConfig:
    config: str = option(None, "The YAML file.", required=True)
    duration_s: float = option(0.0, "Stop after this many seconds (0: never).")

  define_flags(ServeConfig)            # in the module's main block
  cfg = config_from_flags(ServeConfig)  # in main
"""

import dataclasses
import typing
from typing import Any, Type, TypeVar

from absl import flags

T = TypeVar("T")
_DEFINERS = {str: flags.DEFINE_string, int: flags.DEFINE_integer,
             float: flags.DEFINE_float, bool: flags.DEFINE_bool}


def option(default: Any, help_text: str, required: bool = False, **flag_options) -> Any:
  """A dataclass field that is also a flag.

  Args:
    default: the field's (and flag's) default.
    help_text: the flag's help, written here only.
    required: the flag must be given (the field then has no default).
    **flag_options: `choices` (an enum flag), `multi` (a Tuple[str, ...] field given by
      repeating the flag rather than as a comma-separated list), `lower_bound`,
      `upper_bound` (numbers).
  """
  metadata = {"help": help_text, **flag_options}
  if required:
    return dataclasses.field(metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


def _flag_type(hint) -> type:
  """The flag type of a field's annotation (Optional[X]: X; Tuple[str, ...]: tuple)."""
  if typing.get_origin(hint) is typing.Union:
    (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
  if typing.get_origin(hint) is tuple:
    return tuple
  return hint


def _define(field: dataclasses.Field, hint, default, flag_values: flags.FlagValues) -> None:
  metadata = field.metadata
  kind = _flag_type(hint)
  if "choices" in metadata:
    flags.DEFINE_enum(field.name, default, list(metadata["choices"]), metadata["help"],
                      flag_values=flag_values)
  elif kind is tuple:
    define = flags.DEFINE_multi_string if metadata.get("multi") else flags.DEFINE_list
    define(field.name, None if default is None else list(default), metadata["help"],
           flag_values=flag_values)
  else:
    bounds = {key: metadata[key] for key in ("lower_bound", "upper_bound") if key in metadata}
    _DEFINERS[kind](field.name, default, metadata["help"], flag_values=flag_values, **bounds)


def define_flags(config_class: Type[Any], flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines one flag per field of config_class (idempotent); a field without a default is a
  required flag."""
  hints = typing.get_type_hints(config_class)
  for field in dataclasses.fields(config_class):
    if field.name in flag_values:
      continue
    required = field.default is dataclasses.MISSING
    _define(field, hints[field.name], None if required else field.default, flag_values)
    if required:
      flags.mark_flag_as_required(field.name, flag_values=flag_values)


def config_from_flags(config_class: Type[T], flag_values: flags.FlagValues = flags.FLAGS) -> T:
  """The frozen config of the parsed flags (its __post_init__ validates them)."""
  values = {}
  for field in dataclasses.fields(config_class):
    value = flag_values[field.name].value
    values[field.name] = tuple(value) if isinstance(value, list) else value
  return config_class(**values)
