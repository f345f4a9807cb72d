"""The errors a user can cause and fix: bad flags, bad data, an export that cannot be written, a
training that cannot go on. Each message says what happened and what to do; `daml_tf.cli` turns
them into one logged line and exit status 1, without a traceback.

This module imports nothing of the package, so every module can raise these.
"""


class ConfigError(ValueError):
  """A configuration value is out of range; the message names the flag."""


class UnknownDatasetError(ConfigError):
  """The dataset name is not in the registry; the message lists the known names."""


class DataError(ValueError):
  """The data on disk is missing or malformed; the message names the file, folder or video."""


class ExportError(RuntimeError):
  """An export cannot be written (the version exists, a conversion failed); says why."""


class TrainingError(RuntimeError):
  """Training cannot go on (for example a non-finite loss); the message says where."""


class InputStopped(DataError):
  """An input stopped before its end; every earlier frame was yielded. Subclasses say how in
  `_message`.

  Attributes:
    index: the number of frames yielded (the index the next frame would have had).
    path: the input.
    reason: what went wrong, for messages.
  """

  def __init__(self, index: int, path: str, reason: str):
    self.index = index
    self.path = path
    self.reason = reason
    super().__init__(self._message())

  def _message(self) -> str:
    return f"{self.path!r} stopped at frame {self.index}: {self.reason}"
