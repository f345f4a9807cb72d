"""`python -m daml_tf.data.prepare`: see the package's docstring."""

import os
from typing import Sequence

from absl import app
from absl import flags

from daml_tf import cli
from daml_tf.data.prepare import common
from daml_tf.data.prepare import footage
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
  _define_footage_flags(flag_values)
  flags.mark_flag_as_required("output_dir", flag_values=flag_values)


def _define_footage_flags(flag_values: flags.FlagValues) -> None:
  """The flags of `--videos` (a camera's own footage; see footage.py)."""
  flags.DEFINE_string("videos", None,
                      "Your own footage instead of --dataset/--source: a folder of video files, "
                      "a quoted glob pattern or one file (any format FFmpeg reads). Writes the "
                      "frames layout of --dataset=custom.", flag_values=flag_values)
  flags.DEFINE_integer("every_nth", 1, "With --videos: keep every Nth decoded frame.",
                       flag_values=flag_values)
  flags.DEFINE_float("fps", 0.0, "With --videos: keep about this many frames per second "
                     "instead (0: --every_nth decides).", flag_values=flag_values)
  flags.DEFINE_integer("max_frames", 0, "With --videos: at most this many kept frames per "
                       "file (0: all).", flag_values=flag_values)
  flags.DEFINE_float("holdout", 0.0, "With --videos: share of each video's last kept frames "
                     "written to <output_dir>/holdout/ for calibrate --videos_dir (0: none).",
                     flag_values=flag_values)
  flags.DEFINE_integer("min_frames", footage.default_min_frames(),
                       "With --videos: videos (segments, held-out parts) with fewer kept frames "
                       "are skipped with a warning; the default is one clip of --dataset=custom.",
                       flag_values=flag_values)
  flags.DEFINE_string("resize", "", "With --videos: write frames at HEIGHTxWIDTH (e.g. 64x96) "
                      "instead of the source size.", flag_values=flag_values)
  flags.DEFINE_boolean("gray", False, "With --videos: write gray frames.",
                       flag_values=flag_values)
  flags.DEFINE_boolean("split_cuts", True, "With --videos: split each file into segments, "
                       "each its own video (<video>_s01, ...), at scene cuts and timestamp "
                       "gaps; --nosplit_cuts writes each file as one video.",
                       flag_values=flag_values)
  flags.DEFINE_float("cut_factor", footage.DEFAULT_CUT_FACTOR,
                     "With --videos: a scene cut differs from the previous kept frame by more "
                     "than this times the file's median frame difference ...",
                     flag_values=flag_values)
  flags.DEFINE_float("cut_floor", footage.DEFAULT_CUT_FLOOR,
                     "... and by more than this (mean absolute difference of 32x48 gray "
                     "thumbnails in [0, 1]).", flag_values=flag_values)
  flags.DEFINE_float("max_gap_s", footage.DEFAULT_MAX_GAP_S,
                     "With --videos: a jump of the stream's timestamps of more than this many "
                     "seconds (or backwards) splits the file too (0: backwards only).",
                     flag_values=flag_values)


def _prepare_footage(flag_values: flags.FlagValues) -> None:
  if (flag_values.dataset not in (None, footage.CUSTOM_DATASET) or flag_values.source
      or flag_values.verify_only):
    raise app.UsageError("--videos writes the custom dataset: it replaces --dataset, --source "
                         "and --verify_only.")
  options = cli.exit_on_expected_errors(
      lambda: footage.FootageOptions(
          every_nth=flag_values.every_nth, fps=flag_values.fps,
          max_frames=flag_values.max_frames, holdout=flag_values.holdout,
          min_frames=flag_values.min_frames, size=footage.parse_size(flag_values.resize),
          gray=flag_values.gray, split_cuts=flag_values.split_cuts,
          cut_factor=flag_values.cut_factor, cut_floor=flag_values.cut_floor,
          max_gap_s=flag_values.max_gap_s))
  cli.exit_on_expected_errors(footage.prepare_footage, flag_values.videos,
                              os.path.expanduser(flag_values.output_dir), options)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  flag_values = flags.FLAGS
  if flag_values.videos:
    _prepare_footage(flag_values)
    return
  if not flag_values.dataset:
    raise app.UsageError("Give --dataset (an official release) or --videos (your footage).")
  if not flag_values.verify_only and not flag_values.source:
    raise app.UsageError("--source is required unless --verify_only is set.")
  cli.exit_on_expected_errors(
      prepare, flag_values.dataset, os.path.expanduser(flag_values.source or ""),
      os.path.expanduser(flag_values.output_dir), check_counts=flag_values.check_counts,
      verify_only=flag_values.verify_only)


if __name__ == "__main__":
  define_flags()
  app.run(main)
