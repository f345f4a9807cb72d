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
from daml_tf.data import video_io
from daml_tf.data import synthetic
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


def _synthetic_frames(folder, count, seed=0, split="training"):
  """uint8 [count, 120, 180]: video 01 of a split of the synthetic dataset (a walkway with
  pedestrians; its test videos add runners, off-path walkers or carts). Another seed is
  another scene."""
  synthetic.generate(str(folder), num_train_videos=1, num_test_videos=1,
                     frames_per_video=count, seed=seed)
  frames, _ = _frames_of(os.path.join(folder, split, "frames", "01"))
  return np.stack(frames)


def _write_with_timestamps(path, frames, pts, fps=10):
  """Writes frames with the given presentation times (in 1/fps units) through PyAV."""
  import av  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with av.open(str(path), "w") as container:
    stream = container.add_stream("mjpeg", rate=fps)
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = "yuvj420p"
    for frame, time in zip(frames, pts):
      video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="gray")
      video_frame.pts = int(time)
      for packet in stream.encode(video_frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return str(path)


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
  from daml_tf.evaluation import scoring as evaluation  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.DataError, match="testing"):
    evaluation.test_split(cfg)


def test_two_scenes_back_to_back_become_two_videos_each_with_its_holdout(tmp_path):
  scene_a = _synthetic_frames(tmp_path / "a", 40, seed=0)
  scene_b = _synthetic_frames(tmp_path / "b", 30, seed=1)
  path = testing.write_video(tmp_path / "cam" / "nvr.mkv", np.concatenate([scene_a, scene_b]))
  out = tmp_path / "out"
  options = footage.FootageOptions(holdout=0.2, min_frames=5)
  summary = footage.prepare_footage(str(path), str(out), options)
  # s01: 40 frames, max(ceil(8), 5) = 8 held out; s02: 30 frames, max(6, 5) = 6 held out.
  assert summary.videos == {"nvr_s01": (32, 8), "nvr_s02": (24, 6)}
  assert list(summary.splits["nvr"].cuts) == [40] and summary.splits["nvr"].gaps == {}
  training, held = out / "training" / "frames", out / "holdout" / "training" / "frames"
  assert sorted(os.listdir(training)) == sorted(os.listdir(held)) == ["nvr_s01", "nvr_s02"]
  decoded = _decoded(path)
  for folder, first in ((training / "nvr_s01", 0), (held / "nvr_s01", 32),
                        (training / "nvr_s02", 40), (held / "nvr_s02", 64)):
    frames, names = _frames_of(folder)
    assert names[0] == "000.png"
    np.testing.assert_array_equal(frames[0], decoded[first])
  # --nosplit_cuts: today's single video, and no segment of the run before is left behind.
  summary = footage.prepare_footage(str(path), str(out),
                                    dataclasses.replace(options, split_cuts=False))
  assert summary.videos == {"nvr": (56, 14)}  # 70 frames, ceil(0.2 * 70) = 14 held out.
  assert os.listdir(training) == os.listdir(held) == ["nvr"]


def test_continuous_footage_with_moving_objects_is_one_video_named_as_before(tmp_path):
  # The synthetic test video 01 holds runners at 4-6x walking speed as well as walkers.
  frames = _synthetic_frames(tmp_path / "synthetic", 120, split="testing")
  testing.write_video(tmp_path / "cam" / "walkway.mp4", frames, codec="libx264", fps=10)
  summary = footage.prepare_footage(str(tmp_path / "cam"), str(tmp_path / "out"),
                                    footage.FootageOptions(holdout=0.1))
  assert summary.videos == {"walkway": (108, 12)}
  assert summary.splits["walkway"].cuts == {} and summary.splits["walkway"].gaps == {}
  assert summary.splits["walkway"].median > 0


def test_a_pause_in_the_timestamps_splits_and_short_segments_are_skipped(tmp_path):
  frames = _synthetic_frames(tmp_path / "synthetic", 45)  # One continuous scene.
  # 20 frames, 10 s of pause, 20 frames, 5 s of pause, the last 5 frames.
  pts = list(range(20)) + list(range(120, 140)) + list(range(190, 195))
  path = _write_with_timestamps(tmp_path / "cam" / "resumed.mkv", frames, pts)
  out = str(tmp_path / "out")
  summary = footage.prepare_footage(path, out, footage.FootageOptions(min_frames=11))
  assert summary.videos == {"resumed_s01": (20, 0), "resumed_s02": (20, 0)}  # s03: 5 < 11.
  splits = summary.splits["resumed"]
  assert splits.cuts == {} and list(splits.gaps) == [20, 40]
  assert splits.gaps[20] == pytest.approx(10.1) and splits.gaps[40] == pytest.approx(5.1)
  summary = footage.prepare_footage(path, out, footage.FootageOptions(min_frames=11,
                                                                      max_gap_s=6))
  assert summary.videos == {"resumed_s01": (20, 0), "resumed_s02": (25, 0)}
  assert sorted(os.listdir(os.path.join(out, "training", "frames"))) == [
      "resumed_s01", "resumed_s02"]


def test_concatenated_stream_files_split_where_their_timestamps_restart(tmp_path):
  # `cat a.ts b.ts`: the second file's timestamps start again from 0.
  frames = testing.moving_frames(40, rgb=True)
  parts = [testing.write_stream_video(tmp_path / f"{i}.ts", part, fps=10)
           for i, part in enumerate((frames[:20], frames[20:]))]
  (tmp_path / "cam").mkdir()
  (tmp_path / "cam" / "joined.ts").write_bytes(b"".join(
      pathlib.Path(part).read_bytes() for part in parts))
  options = footage.FootageOptions(fps=10, min_frames=5)
  summary = footage.prepare_footage(str(tmp_path / "cam"), str(tmp_path / "out"), options)
  assert summary.videos == {"joined_s01": (20, 0), "joined_s02": (20, 0)}
  assert summary.splits["joined"].gaps[20] == pytest.approx(-1.9)
  # Without splitting, --fps still keeps the frames after the restart (one video).
  summary = footage.prepare_footage(str(tmp_path / "cam"), str(tmp_path / "out2"),
                                    dataclasses.replace(options, split_cuts=False))
  assert summary.videos == {"joined": (40, 0)}


def test_find_splits_floor_and_factor():
  quiet = np.full(99, 0.001)
  recording = lambda spikes: footage.Recording(
      100, np.where(np.isin(np.arange(99), list(spikes)), 0.0, quiet) + np.bincount(
          list(spikes), weights=list(spikes.values()), minlength=99), {})
  options = footage.FootageOptions()
  # A person walking past a near-static camera: 5x the median but under the floor.
  assert footage.find_splits(recording({30: 0.005}), options).cuts == {}
  splits = footage.find_splits(recording({30: 0.005, 60: 0.02}), options)
  assert splits.cuts == {61: 0.02} and splits.threshold == 0.01 and splits.starts() == [61]
  # Over the floor, the factor decides: 3 x the median of a busy recording.
  busy = footage.Recording(100, np.r_[np.full(49, 0.01), 0.025, np.full(49, 0.01)], {7: -3.0})
  splits = footage.find_splits(busy, options)
  assert splits.cuts == {} and splits.threshold == pytest.approx(0.03) and splits.starts() == [7]
  assert footage.find_splits(busy, dataclasses.replace(options, cut_factor=2)).starts() == [7, 50]
  assert footage.find_splits(busy, dataclasses.replace(options, split_cuts=False)).starts() == []
  assert footage.segment_names("cam", 1) == ["cam"]
  assert footage.segment_names("cam", 3) == ["cam_s01", "cam_s02", "cam_s03"]
  assert footage.segment_names("cam", 100)[-1] == "cam_s100"
  with pytest.raises(errors.ConfigError, match="--cut_factor"):
    footage.FootageOptions(cut_factor=0.5)


def test_thumbnail_is_the_mean_gray_of_each_cell():
  frame = np.zeros((64, 96, 3), np.uint8)
  frame[:32, :48] = (255, 255, 255)
  frame[32:, 48:, 1] = 255  # Pure green: luma 0.587.
  small = footage.thumbnail(frame, (2, 2))
  np.testing.assert_allclose(small, [[1.0, 0.0], [0.0, 0.587]], atol=1e-6)
  assert footage.thumbnail(frame).shape == footage.THUMBNAIL_SIZE
  assert footage.thumbnail(frame[:20, :30, 0]).shape == footage.THUMBNAIL_SIZE  # Repeats pixels.
