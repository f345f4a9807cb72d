"""`python -m daml_tf.data.prepare`: see the package's docstring."""

import os
from typing import Sequence

from absl import app
from absl import flags

from daml_tf import cli
from daml_tf.data.prepare import common
from daml_tf.data.prepare.convert import prepare


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the preparation flags (call once, before `app.run(main)`)."""
  flags.DEFINE_string("dataset", None,
                      f"Registry name, one of {', '.join(sorted(common.RELEASE_FORMATS))}.",
                      flag_values=flag_values)
  flags.DEFINE_string("source", None, "The unpacked official download (or a folder holding it).",
                      flag_values=flag_values)
  flags.DEFINE_string("output_dir", None, "Dataset root to write (the later --data_dir).",
                      flag_values=flag_values)
  flags.DEFINE_boolean("verify_only", False, "Only verify --output_dir; --source is not needed.",
                       flag_values=flag_values)
  flags.DEFINE_boolean("check_counts", True,
                       "Require the video and frame counts of the full official release.",
                       flag_values=flag_values)
  flags.mark_flags_as_required(["dataset", "output_dir"], flag_values=flag_values)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  flag_values = flags.FLAGS
  if not flag_values.verify_only and not flag_values.source:
    raise app.UsageError("--source is required unless --verify_only is set.")
  cli.exit_on_expected_errors(
      prepare, flag_values.dataset, os.path.expanduser(flag_values.source or ""),
      os.path.expanduser(flag_values.output_dir), check_counts=flag_values.check_counts,
      verify_only=flag_values.verify_only)


if __name__ == "__main__":
  define_flags()
  app.run(main)
