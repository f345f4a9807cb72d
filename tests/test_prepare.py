"""Tests of daml_tf.data.prepare on tiny fake releases in each official format."""

import os
import subprocess
import sys

import av
import numpy as np
from PIL import Image
import pytest
import scipy.io

from daml_tf.data import labels
from daml_tf.data import layout
from daml_tf.data import prepare
from daml_tf.data.prepare import convert as prepare_convert
from daml_tf.data import registry
from daml_tf.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Two training and two test videos; frame counts differ so a mix-up shows.
UCSD_VIDEOS = {"Train": {"Train001": 5, "Train002": 6}, "Test": {"Test001": 7, "Test002": 8}}
UCSD_COUNTS = prepare.ExpectedCounts(train_videos=2, train_frames=11, test_videos=2,
                                     test_frames=15)
UCSD_M = """TestDataset = {};
% gt{9} = [1:2]; is commented out.
TestDataset.gt{1} = [2:5];
TestDataset.gt{2} = [1:3, 6 : 8];
"""


def _gray(seed, size=(24, 36)):
  return np.random.RandomState(seed).randint(0, 256, size=size).astype(np.uint8)


def _rgb(i, size=(32, 48)):
  # Smooth, so that MJPEG and JPEG errors stay small and the check can be tight.
  y, x = np.mgrid[0:size[0], 0:size[1]]
  return np.stack([40 + x * 2 + i, 60 + y * 3 + i, 100 + x + y + i], -1).astype(np.uint8)


def _write_avi(path, frames):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with av.open(path, "w") as container:
    stream = container.add_stream("mjpeg", rate=25)
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt = "yuvj420p"
    # FFmpeg's default 200 kb/s: FFmpeg 7 (PyAV 14+) spends it less evenly on 32x48 frames.
    stream.bit_rate = 8_000_000
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def _read(path):
  with Image.open(path) as image:
    return np.asarray(image)


def _frames(folder):
  return sorted(os.listdir(folder), key=layout.natural_key)


def _mtimes(folder):
  return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
          for d, _, files in os.walk(folder) for f in files}


def _make_ucsd(tmp_path, gt_text=UCSD_M):
  download = tmp_path / "UCSD_Anomaly_Dataset.v1p2"
  release = download / "UCSDped2"
  originals = {}
  seed = 0
  for split, videos in UCSD_VIDEOS.items():
    for name, count in videos.items():
      folder = release / split / name
      folder.mkdir(parents=True)
      for i in range(count):
        pixels = _gray(seed)
        seed += 1
        Image.fromarray(pixels).save(folder / f"{i + 1:03d}.tif")
        originals[(split, name, i)] = pixels
      # macOS archive debris, not frames.
      (folder / ".DS_Store").write_bytes(b"junk")
      (folder / "._001.tif").write_bytes(b"junk")
  # Pixel masks beside the test videos.
  (release / "Test" / "Test002_gt").mkdir()
  Image.fromarray(_gray(99)).save(release / "Test" / "Test002_gt" / "001.bmp")
  (release / "Test" / "UCSDped2.m").write_text(gt_text)
  return str(download), originals


def test_ucsd_converts_frames_and_ground_truth(tmp_path):
  source, originals = _make_ucsd(tmp_path)
  out = str(tmp_path / "ped2")
  summary = prepare.prepare("ped2", source, out, expected=UCSD_COUNTS)

  assert (summary.train_videos, summary.test_videos, summary.test_frames) == (2, 2, 15)
  for (split, name, i), pixels in originals.items():
    video = f"{int(name[-3:]):02d}"
    split_dir = "training" if split == "Train" else "testing"
    png = os.path.join(out, split_dir, "frames", video, f"{i:03d}.png")
    np.testing.assert_array_equal(_read(png), pixels)  # Lossless, still gray.
  assert _frames(os.path.join(out, "testing", "frames")) == ["01", "02"]
  assert not os.path.exists(os.path.join(out, prepare.TMP_DIR))

  gt = scipy.io.loadmat(os.path.join(out, "ped2.mat"))["gt"]
  assert gt.shape == (1, 2)
  np.testing.assert_array_equal(gt[0, 0], [[2], [5]])
  np.testing.assert_array_equal(gt[0, 1], [[1, 6], [3, 8]])

  spec = registry.get_spec("ped2")
  videos = layout.list_videos(out, "testing", spec)
  frame_labels = labels.load_labels(labels.find_label_file(spec, out), spec.label_format, videos)
  np.testing.assert_array_equal(frame_labels[0], [0, 1, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(frame_labels[1], [1, 1, 1, 0, 0, 1, 1, 1])


def test_second_run_does_nothing_and_partial_output_is_completed(tmp_path, monkeypatch):
  source, originals = _make_ucsd(tmp_path)
  out = str(tmp_path / "ped2")
  prepare.prepare("ped2", source, out, expected=UCSD_COUNTS)
  before = _mtimes(out)

  def fail(*args):
    raise AssertionError("a complete output was written again")

  with monkeypatch.context() as patch:
    patch.setattr(prepare_convert, "_write_video", fail)
    prepare.prepare("ped2", source, out, expected=UCSD_COUNTS)
  assert _mtimes(out) == before

  # An interrupted run: one video missing, one short of frames, a temporary folder left over.
  test_dir = os.path.join(out, "testing", "frames")
  os.rename(os.path.join(test_dir, "01"), os.path.join(out, prepare.TMP_DIR))
  os.remove(os.path.join(out, "training", "frames", "02", "005.png"))
  prepare.prepare("ped2", source, out, expected=UCSD_COUNTS)
  after = _mtimes(out)
  assert len(after) == len(before)
  np.testing.assert_array_equal(_read(os.path.join(test_dir, "01", "006.png")),
                                originals[("Test", "Test001", 6)])
  untouched = os.path.join(out, "training", "frames", "01", "000.png")
  assert after[untouched] == before[untouched]


def test_counts_are_checked_against_the_release(tmp_path):
  source, _ = _make_ucsd(tmp_path)
  out = str(tmp_path / "ped2")
  # By default the counts of the full Ped2 release are required.
  with pytest.raises(DataError, match=r"train videos: expected 16, found 2.*test frames: "
                                      r"expected 2010, found 15"):
    prepare.prepare("ped2", source, out)
  # The conversion itself completed; only the check failed.
  assert prepare.verify(out, "ped2", check_counts=False).test_frames == 15
  with pytest.raises(DataError, match="test videos: expected 3, found 2"):
    prepare.prepare("ped2", source, out, expected=prepare.ExpectedCounts(test_videos=3),
                    verify_only=True)


def test_ucsd_ground_truth_outside_a_video_is_an_error(tmp_path):
  source, _ = _make_ucsd(tmp_path, UCSD_M.replace("[2:5]", "[2:9]"))
  with pytest.raises(DataError, match=r"video 01 has the interval \[2, 9\]"):
    prepare.prepare("ped2", source, str(tmp_path / "ped2"), check_counts=False)


def test_parse_ucsd_ground_truth(tmp_path):
  path = tmp_path / "UCSDped1.m"
  path.write_text("TestDataset.gt{2} = [7 ,9:10 % a comment ]\n];\n"
                  "TestDataset.gt{1} = [1:1:3];\nTestDataset.gt{3} = [];\n")
  gt = prepare.parse_ucsd_ground_truth(str(path))
  np.testing.assert_array_equal(gt[0], [[1], [3]])
  np.testing.assert_array_equal(gt[1], [[7, 9], [7, 10]])
  assert gt[2].shape == (2, 0)
  path.write_text("TestDataset.gt{1} = [1:3];\nTestDataset.gt{3} = [4:5];\n")
  with pytest.raises(DataError, match=r"expected gt\{1\}..gt\{2\}"):
    prepare.parse_ucsd_ground_truth(str(path))
  path.write_text("TestDataset.gt{1} = [5:3];\n")
  with pytest.raises(DataError, match="range '5:3'"):
    prepare.parse_ucsd_ground_truth(str(path))


def _make_avenue(tmp_path):
  release = tmp_path / "Avenue Dataset"
  videos = {("training", "01"): [_rgb(i) for i in range(8)],
            ("testing", "01"): [_rgb(i + 20) for i in range(8)],
            ("testing", "02"): [_rgb(i + 40) for i in range(6)]}
  for (split, name), frames in videos.items():
    _write_avi(str(release / f"{split}_videos" / f"{name}.avi"), frames)
  mask_dir = release / "ground_truth_demo" / "testing_label_mask"
  mask_dir.mkdir(parents=True)
  truth = {"01": [0, 0, 1, 1, 0, 0, 0, 1], "02": [1, 0, 0, 0, 0, 0]}
  for name, frame_labels in truth.items():
    masks = np.empty((1, len(frame_labels)), dtype=object)
    for i, label in enumerate(frame_labels):
      mask = np.zeros((32, 48), np.uint8)
      mask[5 + i, 7] = label
      masks[0, i] = mask
    scipy.io.savemat(str(mask_dir / f"{int(name)}_label.mat"), {"volLabel": masks})
  return str(tmp_path), videos, truth


def test_avenue_decodes_videos_and_builds_per_video_labels(tmp_path):
  source, videos, truth = _make_avenue(tmp_path)
  out = str(tmp_path / "avenue")
  prepare.prepare("avenue", source, out, expected=prepare.ExpectedCounts(1, 8, 2, 14))

  for (split, name), frames in videos.items():
    folder = os.path.join(out, split, "frames", name)
    assert _frames(folder) == [f"{i:03d}.jpg" for i in range(len(frames))]
    for i, frame in enumerate(frames):
      written = _read(os.path.join(folder, f"{i:03d}.jpg")).astype(np.int32)
      assert np.abs(written - frame).mean() < 3

  contents = scipy.io.loadmat(os.path.join(out, "avenue.mat"))
  for name, frame_labels in truth.items():
    np.testing.assert_array_equal(contents[name], [frame_labels])
  spec = registry.get_spec("avenue")
  test = layout.list_videos(out, "testing", spec)
  loaded = labels.load_labels(labels.find_label_file(spec, out), spec.label_format, test)
  np.testing.assert_array_equal(loaded[0], truth["01"])


def _make_shanghaitech(tmp_path, mask_lengths=None):
  release = tmp_path / "shanghaitech"
  train = [_rgb(i) for i in range(7)]
  _write_avi(str(release / "training" / "videos" / "01_001.avi"), train)
  test = {"01_0014": 5, "01_0015": 4}
  truth = {}
  for n, (name, count) in enumerate(test.items()):
    folder = release / "testing" / "frames" / name
    folder.mkdir(parents=True)
    for i in range(count):
      Image.fromarray(_rgb(10 * n + i)).save(folder / f"{i:03d}.jpg", quality=90)
    truth[name] = (np.arange(count) % 2).astype(np.int64)
    length = (mask_lengths or {}).get(name, count)
    mask_dir = release / "testing" / "test_frame_mask"
    mask_dir.mkdir(parents=True, exist_ok=True)
    np.save(mask_dir / f"{name}.npy", np.resize(truth[name], length))
  return str(release), train, truth


def test_shanghaitech_copies_test_frames_and_collects_masks(tmp_path):
  source, train, truth = _make_shanghaitech(tmp_path)
  out = str(tmp_path / "sh")
  summary = prepare.prepare("shanghaitech", source, out,
                            expected=prepare.ExpectedCounts(1, 7, 2, 9))
  assert summary.anomalous_frames == 2 + 2

  for i, frame in enumerate(train):
    written = _read(os.path.join(out, "training", "frames", "01_001", f"{i:03d}.jpg"))
    assert np.abs(written.astype(np.int32) - frame).mean() < 3
  for name in truth:
    source_dir = os.path.join(source, "testing", "frames", name)
    for file in os.listdir(source_dir):
      with open(os.path.join(source_dir, file), "rb") as a, open(
          os.path.join(out, "testing", "frames", name, file), "rb") as b:
        assert a.read() == b.read()
  with np.load(os.path.join(out, "shanghaitech_test_frame_mask.npz")) as masks:
    assert sorted(masks.files) == sorted(truth)
    for name, frame_labels in truth.items():
      np.testing.assert_array_equal(masks[name], frame_labels)


def test_label_length_mismatch_is_reported(tmp_path):
  source, _, _ = _make_shanghaitech(tmp_path, mask_lengths={"01_0015": 6})
  with pytest.raises(DataError, match="video 01_0015 has 6 frame labels but 4 frames"):
    prepare.prepare("shanghaitech", source, str(tmp_path / "sh"), check_counts=False)


def test_video_decoding_failure_names_file_and_frame(tmp_path, monkeypatch):
  source, _, _ = _make_avenue(tmp_path)
  real_open = av.open

  class BrokenContainer:
    """Decodes two frames of the real video, then fails as FFmpeg does on a corrupt packet."""

    def __init__(self, path):
      self._container = real_open(path)
      self.streams = self._container.streams

    def __enter__(self):
      return self

    def __exit__(self, *args):
      self._container.close()

    def decode(self, stream):
      frames = self._container.decode(stream)
      yield next(frames)
      yield next(frames)
      raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

  monkeypatch.setattr(av, "open", BrokenContainer)
  with pytest.raises(DataError, match=r"training_videos/01.avi' at frame 2 .*Invalid data"):
    prepare.prepare("avenue", source, str(tmp_path / "avenue"), check_counts=False)
  monkeypatch.undo()

  with open(os.path.join(source, "Avenue Dataset", "testing_videos", "02.avi"), "wb") as f:
    f.write(b"not a video")
  with pytest.raises(DataError, match=r"Cannot open video .*testing_videos/02.avi"):
    prepare.prepare("avenue", source, str(tmp_path / "avenue"), check_counts=False)


def test_frames_layout_source_is_verified_in_place(tmp_path, frames_dataset):
  root = frames_dataset("ready", videos={"training": {"01": 5}, "testing": {"01": 4}})
  np.savez(os.path.join(root, "shanghaitech_test_frame_mask.npz"), **{"01": np.zeros(4)})
  out = str(tmp_path / "out")
  summary = prepare.prepare("shanghaitech", root, out, check_counts=False)
  assert summary.root == root and summary.test_frames == 4
  assert not os.path.exists(out)


def test_bad_sources_are_reported(tmp_path):
  with pytest.raises(DataError, match="no official release"):
    prepare.prepare("synthetic", str(tmp_path), str(tmp_path / "out"))
  with pytest.raises(DataError, match="not an official 'avenue' download"):
    prepare.prepare("avenue", str(tmp_path), str(tmp_path / "out"))
  with pytest.raises(registry.UnknownDatasetError):
    prepare.prepare("ped3", str(tmp_path), str(tmp_path / "out"))


def test_command_line_converts_then_reports_counts(tmp_path):
  source, _ = _make_ucsd(tmp_path)
  out = tmp_path / "ped2"
  result = subprocess.run(
      [sys.executable, "-m", "daml_tf.data.prepare", "--dataset=ped2", f"--source={source}",
       f"--output_dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=120,
      check=False)
  assert result.returncode == 1, result.stderr
  assert "expected 16, found 2" in result.stderr
  assert sorted(os.listdir(out / "training" / "frames")) == ["01", "02"]
