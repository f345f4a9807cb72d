"""Tests of the frames layout (daml_tf.data.layout) and frame labels (daml_tf.data.labels)."""

import os

import numpy as np
import pytest
import scipy.io

from daml_tf import config
from daml_tf.data import labels
from daml_tf.data import layout
from daml_tf.data import registry
from daml_tf.data.layout import Video
from daml_tf.errors import DataError

SPEC = registry.get_spec("synthetic")


def _touch(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb"):
    pass


def _fake_videos(counts, names=None):
  names = names or [f"{i + 1:02d}" for i in range(len(counts))]
  return [Video(name, tuple(f"{name}/{j:03d}.jpg" for j in range(n)))
          for name, n in zip(names, counts)]


# ----------------------------------------------------------------------------------------------
# Layout.


def test_natural_order_of_videos_and_frames(tmp_path):
  root = tmp_path / "root"
  for video in ("10", "2", "1"):
    for frame in ("10.png", "9.png", "0.png", "notes.txt"):
      _touch(str(root / "testing" / "frames" / video / frame))
  videos = layout.list_videos(str(root), "testing", SPEC)
  assert [v.name for v in videos] == ["1", "2", "10"]
  assert [os.path.basename(p) for p in videos[0].frame_paths] == ["0.png", "9.png", "10.png"]
  assert videos[2].num_frames == 3
  assert sorted(["frame10", "frame9", "a2b10", "a2b3"], key=layout.natural_key) == [
      "a2b3", "a2b10", "frame9", "frame10"]


def test_frame_extensions_are_case_insensitive(tmp_path):
  root = tmp_path / "root"
  _touch(str(root / "training" / "frames" / "01" / "000.JPG"))
  _touch(str(root / "training" / "frames" / "01" / "001.tif"))
  videos = layout.list_videos(str(root), "training", SPEC)
  assert videos[0].num_frames == 2


def test_resolve_dataset_root_both_forms(frames_dataset, tmp_path):
  root = frames_dataset(name=os.path.join("parent", SPEC.name))
  assert layout.resolve_dataset_root(root, SPEC) == root
  assert layout.resolve_dataset_root(str(tmp_path / "parent"), SPEC) == root


def test_resolve_dataset_root_errors(tmp_path):
  with pytest.raises(DataError, match="data_dir"):
    layout.resolve_dataset_root("", SPEC)
  missing = str(tmp_path / "missing")
  with pytest.raises(DataError, match="missing"):
    layout.resolve_dataset_root(missing, SPEC)
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError) as error:
    layout.resolve_dataset_root(str(tmp_path / "empty"), SPEC)
  assert str(tmp_path / "empty") in str(error.value)


def test_list_videos_errors(tmp_path):
  root = tmp_path / "root"
  (root / "training" / "frames").mkdir(parents=True)
  with pytest.raises(DataError, match="testing"):
    layout.list_videos(str(root), "testing", SPEC)
  with pytest.raises(DataError, match="no video folders"):
    layout.list_videos(str(root), "training", SPEC)
  _touch(str(root / "training" / "frames" / "07" / "readme.txt"))
  with pytest.raises(DataError) as error:
    layout.list_videos(str(root), "training", SPEC)
  assert os.path.join("frames", "07") in str(error.value)
  with pytest.raises(ValueError, match="split"):
    layout.list_videos(str(root), "validation", SPEC)


def test_check_clip_length_names_every_short_video():
  videos = _fake_videos([5, 20, 3], names=["a", "b", "c"])
  layout.check_clip_length(videos[1:2], clip_span=8)
  with pytest.raises(DataError) as error:
    layout.check_clip_length(videos, clip_span=8)
  message = str(error.value)
  assert "a (5 frames)" in message and "c (3 frames)" in message and "b (" not in message
  layout.check_clip_length(_fake_videos([9]), clip_span=8)  # Exactly one clip.


def test_unknown_dataset_name():
  with pytest.raises(ValueError, match="ped2"):
    registry.get_spec("ped3")
  with pytest.raises(ValueError, match="ped3"):
    config.DataConfig(dataset="ped3")


# ----------------------------------------------------------------------------------------------
# Labels: hand-made files.


def _cell(*arrays):
  cell = np.empty((1, len(arrays)), dtype=object)
  for i, a in enumerate(arrays):
    cell[0, i] = np.asarray(a, dtype=np.float64)
  return cell


def test_ucsd_intervals(tmp_path):
  path = str(tmp_path / "gt.mat")
  scipy.io.savemat(path, {"gt": _cell([[2, 8], [3, 10]], [[1], [10]], np.zeros((2, 0)))})
  result = labels.load_labels(path, registry.LABELS_UCSD_INTERVALS, _fake_videos([10, 10, 4]))
  np.testing.assert_array_equal(result[0], [0, 1, 1, 0, 0, 0, 0, 1, 1, 1])
  np.testing.assert_array_equal(result[1], np.ones(10))
  np.testing.assert_array_equal(result[2], np.zeros(4))
  assert all(r.dtype == np.uint8 for r in result)


def test_ucsd_interval_outside_video(tmp_path):
  path = str(tmp_path / "gt.mat")
  scipy.io.savemat(path, {"gt": _cell([[5], [11]])})
  with pytest.raises(DataError) as error:
    labels.load_labels(path, registry.LABELS_UCSD_INTERVALS, _fake_videos([10]))
  assert "gt.mat" in str(error.value) and "01" in str(error.value) and "[5, 11]" in str(error.value)


def test_ucsd_video_count_mismatch(tmp_path):
  path = str(tmp_path / "gt.mat")
  scipy.io.savemat(path, {"gt": _cell([[1], [2]], [[1], [2]])})
  with pytest.raises(DataError, match=r"gt\.mat.*2 videos.*3 test videos"):
    labels.load_labels(path, registry.LABELS_UCSD_INTERVALS, _fake_videos([5, 5, 5]))


def test_per_video_mat_by_name_and_by_order(tmp_path):
  path = str(tmp_path / "per_video.mat")
  scipy.io.savemat(path, {"01": np.array([[0, 1, 1]]), "02": np.array([[1, 0]])})
  by_name = labels.load_labels(path, registry.LABELS_PER_VIDEO_MAT,
                               _fake_videos([2, 3], names=["02", "01"]))
  np.testing.assert_array_equal(by_name[0], [1, 0])
  np.testing.assert_array_equal(by_name[1], [0, 1, 1])
  by_order = labels.load_labels(path, registry.LABELS_PER_VIDEO_MAT,
                                _fake_videos([3, 2], names=["video1", "video2"]))
  np.testing.assert_array_equal(by_order[0], [0, 1, 1])


def test_per_video_mat_length_mismatch(tmp_path):
  path = str(tmp_path / "per_video.mat")
  scipy.io.savemat(path, {"01": np.array([[0, 1, 1]])})
  with pytest.raises(DataError) as error:
    labels.load_labels(path, registry.LABELS_PER_VIDEO_MAT, _fake_videos([4]))
  message = str(error.value)
  assert "per_video.mat" in message and "video 01" in message
  assert "3 frame labels" in message and "4 frames" in message


def test_numpy_npz_and_folder(tmp_path):
  arrays = {"01_0014": np.array([0, 0, 1], np.uint8), "01_0015": np.array([1, 1], np.uint8)}
  npz = str(tmp_path / "masks.npz")
  np.savez(npz, **arrays)
  folder = tmp_path / "masks"
  folder.mkdir()
  for name, a in arrays.items():
    np.save(str(folder / f"{name}.npy"), a)
  videos = _fake_videos([3, 2], names=["01_0014", "01_0015"])
  for path in (npz, str(folder)):
    result = labels.load_labels(path, registry.LABELS_NUMPY, videos)
    np.testing.assert_array_equal(result[0], [0, 0, 1])
    np.testing.assert_array_equal(result[1], [1, 1])
  with pytest.raises(DataError, match=r"masks\.npz.*01_0015.*2 frame labels.*5 frames"):
    labels.load_labels(npz, registry.LABELS_NUMPY, _fake_videos([3, 5], names=list(arrays)))
  with pytest.raises(DataError, match="01_0099.npy"):
    labels.load_labels(str(folder), registry.LABELS_NUMPY, _fake_videos([3], names=["01_0099"]))
  with pytest.raises(DataError, match="masks.npz"):
    labels.load_labels(npz, registry.LABELS_NUMPY, videos[:1])


def test_unknown_label_format():
  with pytest.raises(ValueError, match="csv"):
    labels.load_labels("x", "csv", [])


def test_find_label_file(tmp_path):
  spec = registry.get_spec("ped2")
  root = tmp_path / "ped2"
  root.mkdir()
  assert labels.find_label_file(spec, str(root)) == os.path.join(labels.PACKAGED_LABELS_DIR,
                                                                  "ped2.mat")
  _touch(str(root / "ped2.mat"))
  assert labels.find_label_file(spec, str(root)) == str(root / "ped2.mat")
  override = str(tmp_path / "mine.mat")
  _touch(override)
  assert labels.find_label_file(spec, str(root), override) == override
  with pytest.raises(DataError, match="nothere.mat"):
    labels.find_label_file(spec, str(root), str(tmp_path / "nothere.mat"))
  with pytest.raises(DataError, match="synthetic.npz"):
    labels.find_label_file(SPEC, str(root))


# ----------------------------------------------------------------------------------------------
# Labels: the packaged benchmark files.

PED2_TEST_FRAMES = [180, 180, 150, 180, 150, 180, 180, 180, 120, 150, 180, 180]


def _packaged(name):
  spec = registry.get_spec(name)
  return spec, labels.find_label_file(spec, "/nonexistent")


def _assert_counts(result, spec, anomalous):
  assert len(result) == spec.num_test_videos
  assert sum(r.size for r in result) == spec.num_test_frames
  assert sum(int(r.sum()) for r in result) == anomalous


@pytest.mark.parametrize("name, counts, anomalous", [
    ("ped1", [200] * 36, 4045),
    ("ped2", PED2_TEST_FRAMES, 1648),
])
def test_packaged_ucsd_labels(name, counts, anomalous):
  spec, path = _packaged(name)
  result = labels.load_labels(path, spec.label_format, _fake_videos(counts))
  _assert_counts(result, spec, anomalous)


def test_packaged_ucsd_labels_reject_wrong_lengths():
  spec, path = _packaged("ped2")
  with pytest.raises(DataError, match=r"ped2\.mat.*video 01"):
    labels.load_labels(path, spec.label_format, _fake_videos([100] * 12))


def test_packaged_avenue_labels():
  spec, path = _packaged("avenue")
  lengths = {k: v.size for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
  names = sorted(lengths)
  assert names == [f"{i:02d}" for i in range(1, 22)]
  result = labels.load_labels(path, spec.label_format,
                              _fake_videos([lengths[n] for n in names], names))
  _assert_counts(result, spec, 3712)


def test_packaged_shanghaitech_labels():
  spec, path = _packaged("shanghaitech")
  with np.load(path) as archive:
    lengths = {k: archive[k].size for k in archive.files}
  names = sorted(lengths, key=layout.natural_key)
  result = labels.load_labels(path, spec.label_format,
                              _fake_videos([lengths[n] for n in names], names))
  _assert_counts(result, spec, 17326)


# ----------------------------------------------------------------------------------------------
# The real UCSD Ped2 copy, only when DAML_DATA_DIR points at the folder holding ped2/.


@pytest.mark.skipif(not os.environ.get("DAML_DATA_DIR"), reason="DAML_DATA_DIR not set")
def test_real_ped2_layout_and_labels():
  spec = registry.get_spec("ped2")
  root = layout.resolve_dataset_root(os.environ["DAML_DATA_DIR"], spec)
  train = layout.list_videos(root, "training", spec)
  test = layout.list_videos(root, "testing", spec)
  assert [v.num_frames for v in train] == [120, 150, 150, 180, 180, 150, 150, 120, 180, 180,
                                           180, 180, 180, 150, 150, 150]
  assert [v.num_frames for v in test] == PED2_TEST_FRAMES
  result = labels.load_labels(labels.find_label_file(spec, root), spec.label_format, test)
  _assert_counts(result, spec, 1648)


# Held-out tails for threshold calibration.


def _video(name, frames):
  return layout.Video(name, tuple(f"{name}/{i:03d}.png" for i in range(frames)))


def test_split_holdout_by_hand():
  videos = [_video("a", 30), _video("b", 6), _video("c", 100)]
  heads, tails = layout.split_holdout(videos, 0.1, clip_span=3)
  # a: ceil(3) = 3 < clip_span + 1 = 4, so 4 frames held; b: 6 - 4 < 4, stays whole; c: 10.
  assert [(v.name, v.num_frames) for v in heads] == [("a", 26), ("b", 6), ("c", 90)]
  assert [(v.name, v.num_frames) for v in tails] == [("a:holdout", 4), ("c:holdout", 10)]
  assert tails[0].frame_paths == videos[0].frame_paths[26:]
  assert heads[2].frame_paths + tails[1].frame_paths == videos[2].frame_paths


def test_split_holdout_zero_keeps_everything():
  videos = [_video("a", 30)]
  assert layout.split_holdout(videos, 0.0, clip_span=3) == (videos, [])
