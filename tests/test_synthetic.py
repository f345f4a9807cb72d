"""Tests of the embedded synthetic dataset generator (daml_tf.data.synthetic)."""

import glob
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from daml_tf.data import synthetic

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Fewer test than training videos, so that labels of training videos would show up as extra keys.
SMALL = dict(num_train_videos=3, num_test_videos=2, frames_per_video=30)


def _generate(tmp_path_factory, name, **kwargs):
  output_dir = str(tmp_path_factory.mktemp(name))
  summary = synthetic.generate(output_dir, **kwargs)
  return output_dir, summary


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  return _generate(tmp_path_factory, "small", seed=0, **SMALL)


@pytest.fixture(scope="module")
def small_again(tmp_path_factory):
  return _generate(tmp_path_factory, "small_again", seed=0, **SMALL)


@pytest.fixture(scope="module")
def small_other_seed(tmp_path_factory):
  return _generate(tmp_path_factory, "small_other_seed", seed=1, **SMALL)


@pytest.fixture(scope="module")
def baseline_dataset(tmp_path_factory):
  # Long enough for several anomalous events and a meaningful AUC.
  return _generate(tmp_path_factory, "baseline", num_train_videos=1, num_test_videos=4,
                   frames_per_video=120, seed=0)


def _frame_paths(root, split, video):
  return sorted(glob.glob(os.path.join(root, split, "frames", video, "*.png")))


def _read(path):
  with Image.open(path) as image:
    return np.asarray(image)


def _labels(root):
  with np.load(os.path.join(root, synthetic.LABEL_FILE)) as npz:
    return {name: npz[name] for name in npz.files}


# ------------------------------------------------------------------------------------------------
# Determinism.


def test_same_seed_gives_identical_labels(small, small_again):
  first, second = _labels(small[0]), _labels(small_again[0])
  assert sorted(first) == sorted(second)
  for name in first:
    assert first[name].dtype == second[name].dtype
    assert first[name].tobytes() == second[name].tobytes()


def test_same_seed_gives_identical_frames(small, small_again):
  for split, video, frame in (("training", "01", 0), ("training", "03", 17), ("testing", "01", 5),
                              ("testing", "02", 29)):
    path = os.path.join(split, "frames", video, f"{frame:03d}.png")
    np.testing.assert_array_equal(_read(os.path.join(small[0], path)),
                                  _read(os.path.join(small_again[0], path)))


def test_different_seed_gives_different_data(small, small_other_seed):
  for split, video in (("training", "01"), ("testing", "02")):
    paths = _frame_paths(small[0], split, video)
    other_paths = _frame_paths(small_other_seed[0], split, video)
    differences = [np.abs(_read(a).astype(int) - _read(b)).mean()
                   for a, b in zip(paths, other_paths)]
    assert max(differences) > 1.0, (split, video)
  first, second = _labels(small[0]), _labels(small_other_seed[0])
  assert any(first[name].tobytes() != second[name].tobytes() for name in first)


# ------------------------------------------------------------------------------------------------
# Layout.


def test_video_folders_and_frame_names(small):
  root, _ = small
  for split, count in (("training", SMALL["num_train_videos"]),
                       ("testing", SMALL["num_test_videos"])):
    videos = sorted(os.listdir(os.path.join(root, split, "frames")))
    assert videos == [f"{i:02d}" for i in range(1, count + 1)]
    for video in videos:
      names = sorted(os.listdir(os.path.join(root, split, "frames", video)))
      assert names == [f"{i:03d}.png" for i in range(SMALL["frames_per_video"])]


def test_frames_are_single_channel_uint8_of_the_default_size(small):
  root, _ = small
  for path in (_frame_paths(root, "training", "02")[3], _frame_paths(root, "testing", "01")[-1]):
    with Image.open(path) as image:
      assert image.format == "PNG"
      assert image.mode == "L"
      assert image.size == (synthetic.DEFAULT_WIDTH, synthetic.DEFAULT_HEIGHT)
    pixels = _read(path)
    assert pixels.dtype == np.uint8
    assert pixels.shape == (synthetic.DEFAULT_HEIGHT, synthetic.DEFAULT_WIDTH)
    # A real picture, not a constant or saturated image.
    assert pixels.std() > 10 and 20 < pixels.mean() < 235


def test_requested_frame_size(tmp_path):
  synthetic.generate(str(tmp_path), num_train_videos=1, num_test_videos=1, frames_per_video=20,
                     height=64, width=96)
  for split in ("training", "testing"):
    paths = _frame_paths(str(tmp_path), split, "01")
    assert len(paths) == 20
    assert _read(paths[0]).shape == (64, 96)


def test_labels_cover_test_videos_only(small):
  root, summary = small
  labels = _labels(root)
  test_videos = sorted(os.listdir(os.path.join(root, "testing", "frames")))
  assert sorted(labels) == test_videos
  assert len(labels) == SMALL["num_test_videos"] < SMALL["num_train_videos"]
  assert not glob.glob(os.path.join(root, "training", "**", "*.np*"), recursive=True)
  for name, video_labels in labels.items():
    assert video_labels.dtype == np.uint8
    assert video_labels.shape == (len(_frame_paths(root, "testing", name)),)
    assert set(np.unique(video_labels)) == {0, 1}, f"video {name} lacks a class"
  assert summary["num_anomalous_frames"] == sum(int(v.sum()) for v in labels.values())
  assert summary["num_test_frames"] == sum(len(v) for v in labels.values())
  assert summary["num_train_frames"] == SMALL["num_train_videos"] * SMALL["frames_per_video"]


def test_anomalies_are_spans_of_every_kind(baseline_dataset):
  root, summary = baseline_dataset
  labels = _labels(root)
  assert 0.25 <= summary["anomalous_fraction"] <= 0.6
  assert all(count > 0 for count in summary["anomalous_frames_by_kind"].values())
  for name, video_labels in labels.items():
    assert set(np.unique(video_labels)) == {0, 1}, f"video {name} lacks a class"
    # Anomalous objects stay in view for tens of frames, not a flicker of single frames.
    starts = np.flatnonzero(np.diff(np.concatenate([[0], video_labels])) == 1)
    ends = np.flatnonzero(np.diff(np.concatenate([video_labels, [0]])) == -1)
    assert (ends - starts + 1).max() >= 20, name


# ------------------------------------------------------------------------------------------------
# Difficulty.


def test_pixel_difference_baseline_is_weak(baseline_dataset):
  auc = synthetic.pixel_difference_auc(baseline_dataset[0])
  assert 0.3 < auc < 0.85, auc


def test_pixel_difference_auc_of_a_perfect_layout(tmp_path):
  # Hand-made data where the frame difference is the label: the baseline must reach AUC 1.
  video_dir = tmp_path / "testing" / "frames" / "01"
  video_dir.mkdir(parents=True)
  labels = np.array([0, 0, 1, 1, 0, 0], np.uint8)
  previous = np.zeros((8, 8), np.uint8)
  for index, label in enumerate(labels):
    frame = previous + np.uint8(50) if label else previous
    Image.fromarray(frame, mode="L").save(video_dir / f"{index:03d}.png")
    previous = frame
  np.savez(tmp_path / synthetic.LABEL_FILE, **{"01": labels})
  assert synthetic.pixel_difference_auc(str(tmp_path)) == 1.0


# ------------------------------------------------------------------------------------------------
# Arguments and entry point.


def test_refuses_to_mix_with_an_existing_dataset(tmp_path):
  synthetic.generate(str(tmp_path), num_train_videos=2, num_test_videos=2, frames_per_video=20)
  with pytest.raises(FileExistsError, match="overwrite"):
    synthetic.generate(str(tmp_path), num_train_videos=1, num_test_videos=1, frames_per_video=20)
  synthetic.generate(str(tmp_path), num_train_videos=1, num_test_videos=1, frames_per_video=20,
                     overwrite=True)
  # No stale video of the larger first run survives.
  assert os.listdir(tmp_path / "training" / "frames") == ["01"]
  assert os.listdir(tmp_path / "testing" / "frames") == ["01"]
  assert sorted(_labels(str(tmp_path))) == ["01"]


@pytest.mark.parametrize("kwargs", [dict(frames_per_video=5), dict(num_test_videos=0),
                                    dict(num_train_videos=0), dict(height=8)])
def test_rejects_out_of_range_sizes(tmp_path, kwargs):
  with pytest.raises(ValueError):
    synthetic.generate(str(tmp_path), **kwargs)
  assert not os.listdir(tmp_path)


def test_import_does_not_load_tensorflow():
  code = ("import sys; import daml_tf.data.synthetic; "
          "sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)")
  subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_command_line(tmp_path):
  output_dir = tmp_path / "cli"
  result = subprocess.run(
      [sys.executable, "-m", "daml_tf.data.synthetic", f"--output_dir={output_dir}",
       "--num_train_videos=1", "--num_test_videos=1", "--frames_per_video=20", "--seed=3"],
      cwd=REPO_ROOT, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  assert len(_frame_paths(str(output_dir), "testing", "01")) == 20
  assert "Synthetic dataset in" in result.stderr
  assert result.stdout == ""
  reference = tmp_path / "library"
  synthetic.generate(str(reference), num_train_videos=1, num_test_videos=1, frames_per_video=20,
                     seed=3)
  np.testing.assert_array_equal(_labels(str(output_dir))["01"], _labels(str(reference))["01"])
