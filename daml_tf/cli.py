"""What the entry points share: turning expected failures into one clear message."""

from absl import logging

from daml_tf import config as config_lib
from daml_tf import serving
from daml_tf.data import layout
from daml_tf.data import registry

# Errors that describe bad input or a bad flag: the message says everything, a traceback
# would only bury it.
EXPECTED_ERRORS = (config_lib.ConfigError, layout.DataError, registry.UnknownDatasetError,
                   FileNotFoundError, serving.ExportError)


def exit_on_expected_errors(function, *args, **kwargs):
  """Calls `function`; on an expected error logs its message and exits with status 1."""
  try:
    return function(*args, **kwargs)
  except EXPECTED_ERRORS as error:
    logging.error("%s", error)
    layout.exit_process(1)


def finish(skip_teardown: bool = False) -> None:
  """Ends a successful entry point; needed after S3 access (see layout.exit_process)."""
  layout.exit_process(0, skip_teardown)
