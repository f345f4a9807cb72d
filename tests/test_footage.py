"""`prepare --videos`: a camera's own video files into the frames layout of --dataset=custom.

Frame counts are worked out by hand from the options in each test's comments.
"""

import dataclasses
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

import testing
from daml_tf import errors
from daml_tf import video_io
from daml_tf.data.prepare import footage

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _frames_of(folder):
  names = sorted(os.listdir(folder))
  return [np.asarray(Image.open(os.path.join(folder, n))) for n in names], names


def _decoded(path):
  return [frame for _, _, frame in video_io.iter_video(str(path), check_length=False)]


def _videos(folder, lengths):
  """One video per (name, frames); every frame differs from the others."""
  os.makedirs(folder, exist_ok=True)
  return {name: testing.write_video(os.path.join(folder, name),
                                    testing.camera_frames(count, 3, seed=i))
          for i, (name, count) in enumerate(lengths.items())}


def test_subsampling_cap_and_holdout(tmp_path):
  paths = _videos(tmp_path / "cam", {"a.avi": 30, "b.mkv": 17})
  options = footage.FootageOptions(every_nth=2, max_frames=12, holdout=0.25, min_frames=4)
  summary = footage.prepare_footage(str(tmp_path / "cam"), str(tmp_path / "out"), options)
  # a: frames 0, 2, ..., 28 = 15 kept, capped at 12; held out max(ceil(0.25 * 12), 4) = 4.
  # b: frames 0, 2, ..., 16 = 9 kept; held out max(ceil(2.25), 4) = 4, leaving 5.
  assert summary.videos == {"a": (8, 4), "b": (5, 4)}
  assert summary.skipped == ()
  training = tmp_path / "out" / "training" / "frames"
  held = tmp_path / "out" / "holdout" / "training" / "frames"
  decoded = _decoded(paths["a.avi"])
  frames, names = _frames_of(training / "a")
  assert names == [f"{i:03d}.png" for i in range(8)]
  for i, frame in enumerate(frames):  # PNG is lossless: exactly the decoded frames.
    np.testing.assert_array_equal(frame, decoded[2 * i])
  tail, tail_names = _frames_of(held / "a")
  assert tail_names == [f"{i:03d}.png" for i in range(4)]
  np.testing.assert_array_equal(tail[0], decoded[16])
  np.testing.assert_array_equal(tail[3], decoded[22])
  assert len(os.listdir(training / "b")) == 5 and len(os.listdir(held / "b")) == 4
  assert not (tmp_path / "out" / ".prepare_tmp").exists()


def test_fps_resize_gray_and_short_videos(tmp_path):
  _videos(tmp_path / "cam", {"a.avi": 30, "short.avi": 8})
  options = footage.FootageOptions(fps=5, size=(16, 24), gray=True, min_frames=4)
  summary = footage.prepare_footage(str(tmp_path / "cam" / "*.avi"), str(tmp_path / "out"),
                                    options)
  # 25 frames/s at 5 frames/s: frames 0, 5, ..., 25 of a (6); 0 and 5 of short (2 < 4).
  assert summary.videos == {"a": (6, 0)}
  assert summary.skipped == (str(tmp_path / "cam" / "short.avi"),)
  frames, _ = _frames_of(tmp_path / "out" / "training" / "frames" / "a")
  assert frames[0].shape == (16, 24) and frames[0].dtype == np.uint8


def test_holdout_too_short_keeps_the_video_for_training(tmp_path):
  _videos(tmp_path / "cam", {"a.avi": 10})
  options = footage.FootageOptions(holdout=0.1, min_frames=6)
  # A 6-frame tail would leave 4 < 6 for training.
  summary = footage.prepare_footage(str(tmp_path / "cam"), str(tmp_path / "out"), options)
  assert summary.videos == {"a": (10, 0)}
  assert not (tmp_path / "out" / "holdout").exists()


def test_unreadable_file_is_named_and_the_others_are_converted(tmp_path):
  _videos(tmp_path / "cam", {"a.avi": 12, "c.mkv": 12})
  (tmp_path / "cam" / "b.mp4").write_bytes(b"not a video at all" * 100)
  with pytest.raises(errors.DataError, match=r"1 of 3 .*b\.mp4"):
    footage.prepare_footage(str(tmp_path / "cam"), str(tmp_path / "out"),
                            footage.FootageOptions(min_frames=4))
  assert sorted(os.listdir(tmp_path / "out" / "training" / "frames")) == ["a", "c"]


def test_no_videos(tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "notes.txt").write_text("no video here")
  with pytest.raises(errors.DataError, match="No video files found"):
    footage.prepare_footage(str(tmp_path / "empty"), str(tmp_path / "out"))
  with pytest.raises(errors.DataError, match="No video files found"):
    footage.prepare_footage(str(tmp_path / "*.mp4"), str(tmp_path / "out"))


def test_options_and_names():
  with pytest.raises(errors.ConfigError, match="not both"):
    footage.FootageOptions(every_nth=2, fps=5)
  with pytest.raises(errors.ConfigError, match="--resize"):
    footage.parse_size("64-96")
  assert footage.parse_size("64x96") == (64, 96)
  assert footage.video_names(["x/a.mp4", "y/a.avi", "b.ts"]) == ["a", "a_2", "b"]
  # One clip of the custom dataset's default geometry: 2 * (4 - 1) + 4 + 1.
  assert footage.default_min_frames() == 11


def test_command_line_exits_1_naming_the_bad_file(tmp_path):
  _videos(tmp_path / "cam", {"a.avi": 12})
  (tmp_path / "cam" / "broken.ts").write_bytes(b"\x00" * 500)
  result = subprocess.run(
      [sys.executable, "-m", "daml_tf.data.prepare", f"--videos={tmp_path / 'cam'}",
       f"--output_dir={tmp_path / 'out'}", "--min_frames=4", "--dataset=custom"], cwd=ROOT, capture_output=True,
      text=True, timeout=120, check=False)
  assert result.returncode == 1, result.stderr[-2000:]
  assert "broken.ts" in result.stderr and "Traceback" not in result.stderr
  assert os.listdir(tmp_path / "out" / "training" / "frames") == ["a"]


def test_prepared_footage_trains_as_the_custom_dataset(tmp_path):
  """End to end: two videos -> prepare --videos -> train --dataset=custom for a few steps."""
  from daml_tf import cli_flags  # pylint: disable=g-import-not-at-top
  from daml_tf import train as train_command  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  _videos(tmp_path / "cam", {"a.mp4": 24, "b.avi": 20})
  footage.prepare_footage(str(tmp_path / "cam"), str(tmp_path / "data"),
                          footage.FootageOptions(holdout=0.3, min_frames=5))
  flag_values = flags.FlagValues()
  cli_flags.define_flags(flag_values)
  flag_values(["train", "--dataset=custom", f"--data_dir={tmp_path / 'data'}"])
  defaults = cli_flags.config_from_flags(flag_values).data
  assert (defaults.image_height, defaults.image_width, defaults.channels) == (64, 96, 1)
  cfg = testing.short_run_config(tmp_path / "data", tmp_path / "run", calibration_holdout=0.0,
                                 export=False)
  cfg = cfg.replace(data=dataclasses.replace(cfg.data, dataset="custom"))
  run = train_command.run(cfg)
  assert run.metrics["global_step"] == 2 * testing.STEPS_PER_EPOCH
  assert os.path.exists(tmp_path / "run" / "threshold.json")
  # No test split and no labels: evaluation says so instead of scoring nothing.
  from daml_tf import evaluation  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.DataError, match="testing"):
    evaluation.test_split(cfg)
