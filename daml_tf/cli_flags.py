"""Command-line flags of the entry points, defined in one place and turned into a Config once.

Entry points call `define_flags()` before `app.run` and `config_from_flags(FLAGS)` in `main`;
nothing reads FLAGS anywhere else. Flag names equal the config field names, except where a name
is shared between sections (`eval_batch_size`).
"""

import dataclasses
import inspect
import re
from typing import Dict

from absl import flags

from daml_tf import config as config_lib
from daml_tf.data import registry

# Flags whose name differs from the config field they set: flag name -> (section, field).
_RENAMED = {"eval_batch_size": ("eval", "batch_size"), "plots": ("eval", "plots")}

# Dataset-dependent fields: 0 means "take the registry's value".
_FROM_SPEC = {
    "image_height": lambda spec: spec.image_size[0],
    "image_width": lambda spec: spec.image_size[1],
    "channels": lambda spec: spec.channels,
    "time_steps": lambda spec: spec.time_steps,
    "interval": lambda spec: spec.interval,
    "delta": lambda spec: spec.delta,
}

_SECTIONS = {
    "data": config_lib.DataConfig,
    "model": config_lib.ModelConfig,
    "train": config_lib.TrainConfig,
    "eval": config_lib.EvalConfig,
}


def field_docs(cls) -> Dict[str, str]:
  """{field: its description} from the `Attributes:` section of a config class's docstring.

  The docstring is the one place a config field is described: the flag's help is taken from
  it, so the two cannot say different things.
  """
  text = inspect.getdoc(cls) or ""
  _, _, attributes = text.partition("Attributes:\n")
  docs, current = {}, None
  for line in attributes.splitlines():
    match = re.match(r"  (\w+): (.*)", line)
    if match:
      current = match.group(1)
      docs[current] = match.group(2)
    elif line.startswith("    ") and current:
      docs[current] += " " + line.strip()
    else:
      current = None
  return docs


def _help(section: str, field: str, docs: Dict[str, str]) -> str:
  text = docs.get(field, "")
  text = text[:1].upper() + text[1:]
  if section == "data" and field == "dataset":
    text += f" One of {', '.join(registry.dataset_names())}."
  if _flag_name(section, field) in _FROM_SPEC:
    text += " 0: the dataset's default."
  return text


def _flag_name(section: str, field: str) -> str:
  for flag_name, target in _RENAMED.items():
    if target == (section, field):
      return flag_name
  return field


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines one flag per config field (idempotent, so tests can call it again)."""
  for section, cls in _SECTIONS.items():
    docs = field_docs(cls)
    for field in dataclasses.fields(cls):
      name = _flag_name(section, field.name)
      if name in flag_values:
        continue
      default = 0 if name in _FROM_SPEC else field.default
      help_text = _help(section, field.name, docs)
      if field.type in (bool, "bool"):
        flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
      elif field.type in (int, "int"):
        flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
      elif field.type in (float, "float"):
        flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
      else:
        flags.DEFINE_string(name, default, help_text, flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> config_lib.Config:
  """Builds the frozen Config; raises ConfigError naming the flag on a bad value."""
  spec = registry.get_spec(flag_values["dataset"].value)
  sections = {}
  for section, cls in _SECTIONS.items():
    values = {}
    for field in dataclasses.fields(cls):
      name = _flag_name(section, field.name)
      value = flag_values[name].value
      if name in _FROM_SPEC and not value:
        value = _FROM_SPEC[name](spec)
      values[field.name] = value
    sections[section] = cls(**values)
  return config_lib.Config(**sections)
