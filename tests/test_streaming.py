"""Streaming detection: frame-by-frame scores equal the batch evaluation's; video I/O; detect CLI.

The equality tests use an untrained tiny model (random weights score frames just as
deterministically as trained ones); the CLI test restores a model trained for one step.
"""

import csv
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
from PIL import Image
import pytest

import testing
from testing import HEIGHT, WIDTH
from daml_tf import calibration
from daml_tf import evaluation
from daml_tf import run_dir
from daml_tf import training
from daml_tf import video_io
from daml_tf.inference import streaming
from daml_tf.models import build
from daml_tf.data import layout
from daml_tf.data import pipeline
from daml_tf.data import synthetic

REPO = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(model_dir="unused", data_dir=""):
  return testing.tiny_config(data_dir, model_dir, data=dict(interval=2, clips_per_epoch=2),
                             train_epochs=1, finetune_epochs=0, image_summary_steps=0,
                             export=False)


def moving_frames(num_frames, height=HEIGHT, width=WIDTH, rgb=False, seed=0):
  """uint8 [N, H, W, 1|3]: a textured scene with a bright disc moving across it, plus noise."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:height, 0:width]
  scene = 90 + 40 * np.sin(xx / 5.0) + 30 * np.cos(yy / 7.0)
  frames = []
  for t in range(num_frames):
    image = scene.copy()
    cx, cy = (4 + 2.5 * t) % width, height / 2 + height / 5 * np.sin(t / 3)
    image[(xx - cx)**2 + (yy - cy)**2 < (height / 6)**2] = 235
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    frames.append(np.stack([image, np.roll(image, 3, axis=1), 255 - image], axis=-1)
                  if rgb else image[..., None])
  return np.stack(frames)


def write_pngs(folder, frames):
  os.makedirs(folder, exist_ok=True)
  for i, frame in enumerate(frames):
    Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame).save(
        os.path.join(folder, f"{i}.png"))  # Unpadded names: natural order must hold.
  return str(folder)


@pytest.fixture(scope="module")
def cfg():
  return tiny_config()


@pytest.fixture(scope="module")
def model(cfg):
  keras.utils.set_random_seed(0)
  model = build.build_model(cfg)
  model.set_background(
      np.random.default_rng(0).uniform(0.2, 0.6, size=(HEIGHT, WIDTH, 1)).astype("float32"))
  return model


def batch_scores(model, data_cfg, folder):
  """What the evaluation computes for a frames folder: (indices, raw scores)."""
  video = layout.Video("video", tuple(video_io.list_frame_files(folder)))
  frames = pipeline.load_video(video, data_cfg.image_size, data_cfg.channels,
                               model.background.numpy())
  return evaluation.VideoScorer(model, data_cfg, batch_size=8).score(frames)


# --- StreamingDetector ----------------------------------------------------------------------


@pytest.mark.parametrize("size,rgb", [((HEIGHT, WIDTH), False), ((45, 70), True)])
def test_streaming_scores_equal_batch_scores(model, cfg, tmp_path, size, rgb):
  frames = moving_frames(20, *size, rgb=rgb)
  folder = write_pngs(tmp_path / "video", frames)
  indices, expected = batch_scores(model, cfg.data, folder)

  detector = streaming.StreamingDetector(model, cfg.data)
  read = list(video_io.iter_frames(folder))
  np.testing.assert_array_equal(np.stack([frame for _, _, frame in read]), frames)
  results = [detector.process(frame) for _, _, frame in read]

  span = cfg.data.clip_span
  assert span == 5
  assert [r.index for r in results] == list(range(20))
  assert all(r.score is None and r.smoothed is None and not r.alarm for r in results[:span])
  np.testing.assert_array_equal(indices, np.arange(span, 20))
  np.testing.assert_allclose([r.score for r in results[span:]], expected, rtol=1e-5, atol=1e-8)
  assert np.ptp(expected) > 0  # The comparison is not between constants.


def test_ring_buffer_holds_clip_span_plus_one_codes_and_reset(model, cfg):
  frames = moving_frames(12)
  detector = streaming.StreamingDetector(model, cfg.data)
  first = [detector.process(frame) for frame in frames]
  span = cfg.data.clip_span
  assert detector.buffer_capacity == span + 1
  assert len(detector.buffered_codes) == span + 1
  # The buffer holds the codes of the last span + 1 frames, oldest first.
  codes = model.encode(frames / np.float32(255) - model.background.numpy())[-1].numpy()
  np.testing.assert_allclose(np.concatenate(detector.buffered_codes), codes[-(span + 1):],
                             rtol=1e-5, atol=1e-6)

  detector.reset()
  assert not detector.buffered_codes
  again = [detector.process(frame) for frame in frames]
  assert [r.index for r in again] == list(range(12))
  assert [r.score for r in again[:span]] == [None] * span
  np.testing.assert_allclose([r.score for r in again[span:]], [r.score for r in first[span:]],
                             rtol=1e-6)


def test_other_input_size_and_channels_are_converted_with_one_warning(model, cfg, monkeypatch):
  warnings = []
  monkeypatch.setattr(streaming.logging, "warning",
                      lambda message, *args: warnings.append(message % args))
  detector = streaming.StreamingDetector(model, cfg.data)
  results = [detector.process(frame) for frame in moving_frames(8, 60, 90, rgb=True)]
  assert len(warnings) == 1
  assert "60x90x3" in warnings[0] and f"{HEIGHT}x{WIDTH}x1" in warnings[0]
  assert "gray" in warnings[0]
  assert all(np.isfinite(r.score) for r in results[cfg.data.clip_span:])
  # Frames of the model's own size need no conversion and no warning.
  streaming.StreamingDetector(model, cfg.data).process(moving_frames(1)[0])
  assert len(warnings) == 1


def test_float_frames_match_uint8_frames_and_bad_frames_are_refused(model, cfg):
  frames = moving_frames(8)
  as_uint8 = streaming.StreamingDetector(model, cfg.data)
  as_float = streaming.StreamingDetector(model, cfg.data)
  for frame in frames:
    expected = as_uint8.process(frame).score
    got = as_float.process(frame.astype(np.float64) / 255).score
    assert (got is None) == (expected is None)
    if got is not None:
      assert got == pytest.approx(expected, rel=1e-5)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    as_float.process(frames[0].astype(np.float32))
  with pytest.raises(ValueError, match="shape"):
    as_float.process(np.zeros((4, 4, 4, 1), np.uint8))


def test_causal_smoother_hand_computed():
  smoother = streaming.CausalSmoother(3)
  got = [smoother.update(v) for v in (1.0, 2.0, 3.0, 4.0, 10.0)]
  np.testing.assert_allclose(got, [1.0, 1.5, 2.0, 3.0, 17.0 / 3.0])
  smoother.reset()
  assert smoother.update(5.0) == 5.0
  with pytest.raises(ValueError):
    streaming.CausalSmoother(0)


def test_smoothing_is_causal_and_alarms_use_the_threshold(model, cfg):
  frames = moving_frames(20)
  span, window = cfg.data.clip_span, 3
  raw = [r.score for r in map(streaming.StreamingDetector(model, cfg.data).process, frames)]
  smoothed_expected = [None] * span + [
      float(np.mean(raw[max(span, t - window + 1):t + 1])) for t in range(span, 20)]
  threshold = float(np.median(smoothed_expected[span:]))

  detector = streaming.StreamingDetector(model, cfg.data, threshold=threshold,
                                         smoothing_window=window)
  results = [detector.process(frame) for frame in frames]
  for result, score, smoothed in zip(results, raw, smoothed_expected):
    assert result.score == pytest.approx(score, rel=1e-6) if score is not None else (
        result.score is None)
    if smoothed is None:
      assert result.smoothed is None and not result.alarm
    else:
      assert result.smoothed == pytest.approx(smoothed, rel=1e-6)
      assert result.alarm == (result.smoothed > threshold)
  assert 0 < sum(r.alarm for r in results) < 20 - span

  # Other future frames change nothing that came before them.
  altered = np.concatenate([frames[:12], 255 - frames[12:]])
  detector.reset()
  other = [detector.process(frame) for frame in altered]
  assert [r.smoothed for r in other[:12]] == [r.smoothed for r in results[:12]]
  assert [r.smoothed for r in other[12:]] != [r.smoothed for r in results[12:]]


def test_calibrate_and_save_threshold(model, cfg, tmp_path):
  videos, scores = [], []
  for seed in (1, 2):
    folder = write_pngs(tmp_path / str(seed), moving_frames(10, seed=seed))
    videos.append(layout.Video(str(seed), tuple(video_io.list_frame_files(folder))))
    scores.append(batch_scores(model, cfg.data, folder)[1])
  threshold = calibration.calibrate_threshold(model, cfg.data, videos, quantile=0.9)
  assert threshold == pytest.approx(float(np.quantile(np.concatenate(scores), 0.9)))
  assert run_dir.load_threshold(str(tmp_path)) is None
  run_dir.save_threshold(str(tmp_path), threshold, 0.9)
  assert run_dir.load_threshold(str(tmp_path)) == {"threshold": threshold, "quantile": 0.9}
  with pytest.raises(ValueError, match="quantile"):
    calibration.calibrate_threshold(model, cfg.data, videos, quantile=1.5)


# --- video_io -------------------------------------------------------------------------------


def write_video(path, frames, codec="mjpeg", fps=25):
  with video_io.VideoWriter(str(path), fps=fps, codec=codec) as writer:
    for frame in frames:
      writer.write(frame)
  return str(path)


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


# --- detect CLI -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_model_dir(tmp_path_factory):
  """A model directory trained for one step (one train-phase epoch of one batch)."""
  data_dir = tmp_path_factory.mktemp("synthetic")
  synthetic.generate(str(data_dir), num_train_videos=1, num_test_videos=1, frames_per_video=20,
                     seed=0)
  model_dir = tmp_path_factory.mktemp("model")
  assert training.train(tiny_config(model_dir, str(data_dir))).metrics["global_step"] == 1
  return str(model_dir)


def _run_detect(*args):
  return subprocess.run([sys.executable, "-m", "daml_tf.detect", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=180)


def test_detect_cli_end_to_end(trained_model_dir, tmp_path):
  frames = moving_frames(16, 40, 56, rgb=True)
  video = write_video(tmp_path / "input.avi", frames)
  # threshold.json is the default; --threshold overrides it.
  run_dir.save_threshold(trained_model_dir, 1e9, 0.995)
  detector = streaming.StreamingDetector.from_model_dir(trained_model_dir)
  assert detector.threshold == 1e9
  expected = [detector.process(frame).score for _, _, frame in video_io.iter_frames(video)]
  span = detector.data_cfg.clip_span
  threshold = float(np.median(expected[span:]))

  output_dir = tmp_path / "out"
  result = _run_detect(f"--model_dir={trained_model_dir}", f"--input={video}",
                       f"--output_dir={output_dir}", f"--threshold={threshold!r}",
                       "--annotate", "--log_every=5")
  assert result.returncode == 0, result.stderr
  assert "frames=16 scored=11 alarms=" in result.stderr
  assert "fps" in result.stderr

  with open(output_dir / "scores.csv") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["frame", "timestamp_s", "score", "alarm"]
  assert [int(r["frame"]) for r in rows] == list(range(16))
  np.testing.assert_allclose([float(r["timestamp_s"]) for r in rows], np.arange(16) / 25,
                             atol=1e-6)
  assert all(r["score"] == "" and r["alarm"] == "0" for r in rows[:span])
  # Scores are written at float32 precision; parsed as float32 they are the detector's values.
  scores = np.array([r["score"] for r in rows[span:]], np.float32).astype(np.float64)
  np.testing.assert_allclose(scores, expected[span:], rtol=1e-5)
  alarms = [r["alarm"] == "1" for r in rows[span:]]
  assert alarms == list(scores > threshold) and 0 < sum(alarms) < len(alarms)

  assert (output_dir / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  annotated = [p for p in output_dir.iterdir() if p.stem == "annotated"]
  assert len(annotated) == 1 and annotated[0].suffix in (".mp4", ".avi")
  shapes = [frame.shape for _, _, frame in video_io.iter_frames(str(annotated[0]))]
  assert shapes == [(40, 56, 3)] * 16


@pytest.mark.parametrize("model_dir_flag,message", [
    ("--model_dir={tmp}/nowhere", "nowhere"),
    (None, "--model_dir"),
])
def test_detect_cli_without_model_dir_exits_with_one_message(tmp_path, model_dir_flag,
                                                             message):
  folder = write_pngs(tmp_path / "video", moving_frames(3))
  args = [f"--input={folder}", f"--output_dir={tmp_path / 'out'}"]
  if model_dir_flag:
    args.append(model_dir_flag.format(tmp=tmp_path))
  result = _run_detect(*args)
  assert result.returncode == 1, result.stderr
  assert message in result.stderr
  assert "Traceback" not in result.stderr
