"""Writes the training frames of a dataset as sharded TFRecords for training at scale.

  python -m daml_tf.data.to_tfrecord --dataset=ped2 --data_dir=data/ped2 \
      --output_dir=gs://bucket/ped2_tfrecords --shards=16

decodes every training frame once (resized to the model resolution, converted to its channels)
and writes them as uint8 TFRecord shards, the background (background.npy) and an index
(index.json), so that training with --tfrecord_dir=<output_dir> needs nothing else. The records
hold frames, not clips, so one conversion serves every --time_steps/--interval/--delta. See
daml_tf.data.tfrecord for the format. Remote directories (gs://, and s3:// or any other fsspec
scheme) work for both --data_dir and --output_dir.

Library code calls `tfrecord.convert`; the entry point is `main` after `define_flags`.
"""

import os
from typing import Sequence

from absl import app
from absl import flags

from daml_tf import cli
from daml_tf.data import layout
from daml_tf.data import registry
from daml_tf.data import tfrecord


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the conversion flags (call once, before `app.run(main)`)."""
  flags.DEFINE_string("dataset", None,
                      f"Registry name, one of {', '.join(registry.dataset_names())}.",
                      flag_values=flag_values)
  flags.DEFINE_string("data_dir", None,
                      "The dataset root (holding training/), or a folder holding <dataset>/.",
                      flag_values=flag_values)
  flags.DEFINE_string("output_dir", None, "TFRecord directory to write (the later "
                      "--tfrecord_dir).", flag_values=flag_values)
  flags.DEFINE_integer("shards", 0,
                       f"Shard files, at most one per training video (0: one per video, at "
                       f"most {tfrecord.DEFAULT_SHARDS}). Use at least as many as training "
                       f"workers: workers divide the data by file.", lower_bound=0,
                       flag_values=flag_values)
  flags.DEFINE_integer("image_height", 0, "Model height (0: the dataset's default).",
                       lower_bound=0, flag_values=flag_values)
  flags.DEFINE_integer("image_width", 0, "Model width (0: the dataset's default).",
                       lower_bound=0, flag_values=flag_values)
  flags.DEFINE_integer("channels", 0, "1 or 3 (0: the dataset's default).", lower_bound=0,
                       flag_values=flag_values)
  flags.DEFINE_integer("frames_per_record", tfrecord.DEFAULT_FRAMES_PER_RECORD,
                       "Consecutive frames of one video per record.", lower_bound=1,
                       flag_values=flag_values)
  flags.DEFINE_boolean("overwrite", False, "Replace a conversion already in --output_dir.",
                       flag_values=flag_values)
  flags.mark_flags_as_required(["dataset", "data_dir", "output_dir"], flag_values=flag_values)


def _local(path: str) -> str:
  return path if "://" in path else os.path.expanduser(path)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  flag_values = flags.FLAGS
  status = 0
  try:
    cli.exit_on_expected_errors(
        tfrecord.convert, flag_values.dataset, _local(flag_values.data_dir),
        _local(flag_values.output_dir), num_shards=flag_values.shards,
        image_height=flag_values.image_height, image_width=flag_values.image_width,
        channels=flag_values.channels, frames_per_record=flag_values.frames_per_record,
        overwrite=flag_values.overwrite)
  except SystemExit as exit_:
    status = exit_.code
  cli.exit_process(status)


if __name__ == "__main__":
  define_flags()
  app.run(main)
