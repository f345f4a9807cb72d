"""Streaming detection: frame-by-frame scores equal the batch evaluation's; smoothing, alarms
and thresholds.

The tests use an untrained tiny model: random weights score frames just as deterministically as
trained ones.
"""

import dataclasses

import numpy as np
import pytest

import testing
from testing import HEIGHT, WIDTH, moving_frames, write_pngs
from daml_tf.evaluation import calibration
from daml_tf.evaluation import scoring as evaluation
from daml_tf import run_dir
from daml_tf.data import video_io
from daml_tf.data import layout
from daml_tf.data import pipeline
from daml_tf.inference import streaming


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


def test_detector_scores_with_the_configured_score(model, cfg):
  frames = moving_frames(12)
  mean = [r.score for r in map(streaming.StreamingDetector(model, cfg.data).process, frames)]
  top = [r.score for r in map(
      streaming.StreamingDetector(model, cfg.data, score="latent_max").process, frames)]
  scored = [i for i, value in enumerate(mean) if value is not None]
  assert scored and all(top[i] >= mean[i] for i in scored)  # the worst cell >= the mean
  with pytest.raises(ValueError, match="decodes the predicted frame"):
    streaming.StreamingDetector(model, cfg.data, score="frame_psnr")


def test_result_carries_the_latent_error_map_of_the_score(model, cfg):
  detector = streaming.StreamingDetector(model, cfg.data)
  results = [detector.process(frame) for frame in moving_frames(10)]
  span = cfg.data.clip_span
  assert all(r.error_map is None for r in results[:span])
  for result in results[span:]:
    # One value per latent cell; the paper's score is their mean.
    assert result.error_map.shape == testing.LATENT[:2]
    assert result.error_map.dtype == np.float32
    assert float(result.error_map.mean()) == pytest.approx(result.score, rel=1e-5)
  # Results still compare with == (the map is left out of the comparison).
  assert results[span] == dataclasses.replace(results[span], error_map=None)


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
  assert run_dir.load_threshold(str(tmp_path)) == {"threshold": threshold, "quantile": 0.9,
                                                   "score": "latent_mean"}
  with pytest.raises(ValueError, match="quantile"):
    calibration.calibrate_threshold(model, cfg.data, videos, quantile=1.5)
