"""What the entry points share: turning expected failures into one clear message."""

import contextlib
import os
import sys
from typing import Iterator, Sequence

from absl import flags
from absl import logging

from daml_tf import errors
from daml_tf import fileio

# Errors that describe bad input, a bad flag or a run that cannot go on: the message says
# everything, a traceback would only bury it.
EXPECTED_ERRORS = (errors.ConfigError, errors.DataError, errors.ExportError,
                   errors.TrainingError, FileNotFoundError)


def exit_process(status: int, skip_teardown: bool = False) -> None:
  """Ends an entry point with `status`; with skip_teardown, without C++ teardown.

  Args:
    status: the exit status.
    skip_teardown: leave with os._exit (a multi-worker process: tearing down its collective
      runtime waits for peers that may already be gone, up to the coordination service's
      heartbeat timeout). Logs and standard streams are flushed first; files are closed.
  """
  if skip_teardown:
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
  if status:
    sys.exit(status)


@contextlib.contextmanager
def expected_errors_exit(skip_teardown: bool = False):
  """On an expected error inside the block, logs its message and exits with status 1.

  Args:
    skip_teardown: see exit_process (a multi-worker process).
  """
  try:
    yield
  except EXPECTED_ERRORS as error:
    logging.error("%s", error)
    exit_process(1, skip_teardown)


def exit_on_expected_errors(function, *args, **kwargs):
  """Calls `function`; on an expected error logs its message and exits with status 1."""
  with expected_errors_exit():
    return function(*args, **kwargs)


def finish(skip_teardown: bool = False, status: int = 0) -> None:
  """Ends an entry point that ran to its end (status 0 unless it says otherwise); needed after
  a multi-worker run (see exit_process)."""
  exit_process(status, skip_teardown)


@contextlib.contextmanager
def mirrored_flags(flag_values: flags.FlagValues, names: Sequence[str]) -> Iterator[None]:
  """Points each named directory flag that TensorFlow cannot open (s3://, ...) at a local mirror.

  TensorFlow's checkpoints, SavedModels and summaries only reach the filesystems it serves
  itself; for any other scheme the block works on a local copy, uploaded after every checkpoint
  and when the block ends (see fileio.mirrored). The flags get their values back afterwards.

  Args:
    flag_values: the parsed flags.
    names: directory flags (an unset or absent one is left alone).
  """
  with contextlib.ExitStack() as stack:
    originals = {}
    for name in names:
      value = getattr(flag_values, name, None) if name in flag_values else None
      if value and not fileio.is_tf_native(value):
        with expected_errors_exit():
          fileio.ensure_filesystem(value)
          local = stack.enter_context(fileio.mirrored(value))
        originals[name] = value
        flag_values[name].value = local
    try:
      yield
    finally:
      for name, value in originals.items():
        flag_values[name].value = value
