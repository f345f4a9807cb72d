"""Video input and output: round trips, odd sizes, damaged files and frames folders."""

import pathlib

import numpy as np
import pytest

from testing import moving_frames, write_pngs, write_video
from daml_tf.data import video_io


def test_video_round_trip(tmp_path):
  frames = moving_frames(12, 40, 56, rgb=True)
  path = write_video(tmp_path / "clip.avi", frames)
  read = list(video_io.iter_frames(path))
  assert [index for index, _, _ in read] == list(range(12))
  np.testing.assert_allclose([t for _, t, _ in read], np.arange(12) / 25, atol=1e-6)
  decoded = np.stack([frame for _, _, frame in read])
  assert decoded.shape == (12, 40, 56, 3) and decoded.dtype == np.uint8
  # Within JPEG / 4:2:0 chroma tolerance.
  assert np.abs(decoded.astype(float) - frames).mean() < 8
  assert video_io.video_fps(path) == pytest.approx(25)


def test_video_writer_pads_odd_sizes_and_takes_gray(tmp_path):
  path = write_video(tmp_path / "odd.avi", moving_frames(3, 33, 47), codec="mpeg4")
  assert [frame.shape for _, _, frame in video_io.iter_frames(path)] == [(34, 48, 3)] * 3


def test_video_writer_refuses_or_fits_a_frame_of_another_size(tmp_path):
  first, other = moving_frames(1, 32, 48, rgb=True)[0], moving_frames(1, 64, 80, rgb=True)[0]
  strict = video_io.VideoWriter(str(tmp_path / "strict.avi"), fps=10, codec="mpeg4")
  strict.write(first)
  with pytest.raises(ValueError, match="differs from the video's first frame"):
    strict.write(other)
  strict.close()
  # A camera back from an outage at another resolution: its frames fit the video.
  with video_io.VideoWriter(str(tmp_path / "fit.avi"), fps=10, codec="mpeg4",
                            fit_size=True) as writer:
    writer.write(first)
    writer.write(other)
  frames = [frame for _, _, frame in video_io.iter_frames(str(tmp_path / "fit.avi"))]
  assert [frame.shape for frame in frames] == [(32, 48, 3)] * 2


@pytest.mark.parametrize("damage", ["cut_middle", "truncate"])
def test_damaged_video_stops_cleanly_with_the_index(tmp_path, monkeypatch, damage):
  data = pathlib.Path(write_video(tmp_path / "clip.avi", moving_frames(12, rgb=True)))
  contents = data.read_bytes()
  third = len(contents) // 3
  damaged = tmp_path / "damaged.avi"
  damaged.write_bytes(contents[:third] + contents[2 * third:] if damage == "cut_middle" else
                      contents[:len(contents) // 2])
  warnings = []
  monkeypatch.setattr(video_io.logging, "warning",
                      lambda message, *args: warnings.append(message % args))
  frames = []
  with pytest.raises(video_io.DecodeStopped) as stopped:
    for index, _, frame in video_io.iter_frames(str(damaged)):
      frames.append(frame)
  assert 0 < stopped.value.index < 12
  assert stopped.value.index == len(frames)
  assert f"frame {stopped.value.index}" in str(stopped.value)
  assert any(str(stopped.value.index) in w for w in warnings)


def test_frames_folder_with_a_corrupt_frame_and_missing_input(tmp_path):
  folder = write_pngs(tmp_path / "video", moving_frames(8))
  bad = pathlib.Path(folder, "5.png")
  bad.write_bytes(bad.read_bytes()[:40])
  frames = []
  with pytest.raises(video_io.DecodeStopped) as stopped:
    for _, _, frame in video_io.iter_frames(folder):
      frames.append(frame)
  assert stopped.value.index == 5 == len(frames)
  with pytest.raises(FileNotFoundError, match="nowhere"):
    video_io.iter_frames(str(tmp_path / "nowhere.avi"))


def test_read_image_keeps_size_and_channels(tmp_path):
  gray, rgb = moving_frames(1, 30, 44), moving_frames(1, 30, 44, rgb=True)
  folder = write_pngs(tmp_path / "gray", gray)
  np.testing.assert_array_equal(video_io.read_image(folder + "/0.png"), gray[0])
  folder = write_pngs(tmp_path / "rgb", rgb)
  np.testing.assert_array_equal(video_io.read_image(folder + "/0.png"), rgb[0])
