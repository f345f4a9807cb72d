"""Several streams through one model: each stream's results equal those of a StreamingDetector
of its own, with one encoder call and one motion-model call per step.

Untrained tiny model (random weights score as deterministically as trained ones).
"""

import tempfile

import numpy as np
import pytest

import testing
from testing import moving_frames
from daml_tf import errors
from daml_tf.inference import backends
from daml_tf.inference import multistream
from daml_tf.inference import streaming

# Scores of one stream in a batch against the same stream alone (float rounding of batched
# kernels); in practice the Keras and LiteRT runtimes here give identical values.
RTOL = 1e-5


class CountingBackend:
  """A real backend whose network calls are counted (batch sizes recorded)."""

  def __init__(self, backend):
    self._backend = backend
    self.name, self.image_size = backend.name, backend.image_size
    self.channels, self.time_steps = backend.channels, backend.time_steps
    self.encode_batches, self.predict_batches = [], []

  def encode(self, frame):
    self.encode_batches.append(1)
    return self._backend.encode(frame)

  def encode_batch(self, frames):
    self.encode_batches.append(len(frames))
    return self._backend.encode_batch(frames)

  def predict(self, past):
    self.predict_batches.append(len(past))
    return self._backend.predict(past)


def camera_videos():
  """Three cameras: different lengths, two of one size (RGB), one of another (gray)."""
  return {
      "gate": moving_frames(20, 45, 70, rgb=True, seed=1),
      "hall": moving_frames(13, 45, 70, rgb=True, seed=2),
      "yard": moving_frames(16, seed=3),
  }


def schedule(videos):
  """Step t gives each camera its next frame, except that yard skips every third step (a
  camera without a new frame): {camera: frames fed at step t} per step."""
  position = {name: 0 for name in videos}
  steps = []
  t = 0
  while any(position[name] < len(frames) for name, frames in videos.items()):
    step = {}
    for name, frames in videos.items():
      if position[name] < len(frames) and not (name == "yard" and t % 3 == 2):
        step[name] = frames[position[name]]
        position[name] += 1
    if step:
      steps.append(step)
    t += 1
  return steps


def assert_same_results(got, expected):
  assert [r.index for r in got] == [r.index for r in expected]
  assert [r.score is None for r in got] == [r.score is None for r in expected]
  assert [r.alarm for r in got] == [r.alarm for r in expected]
  scored = [(g, e) for g, e in zip(got, expected) if e.score is not None]
  assert scored
  np.testing.assert_allclose([g.score for g, _ in scored], [e.score for _, e in scored],
                             rtol=RTOL)
  np.testing.assert_allclose([g.smoothed for g, _ in scored], [e.smoothed for _, e in scored],
                             rtol=RTOL)
  for g, e in scored:
    np.testing.assert_allclose(g.error_map, e.error_map, rtol=RTOL, atol=1e-7)


def run_both(backend, cfg, **kwargs):
  """(multi-stream results, separate-detector results) per camera over `schedule`."""
  videos = camera_videos()
  expected = {}
  for name, frames in videos.items():
    single = streaming.StreamingDetector(backend, cfg.data, **kwargs)
    expected[name] = [single.process(frame) for frame in frames]
  detector = multistream.MultiStreamDetector(backend, cfg.data, list(videos), **kwargs)
  got = {name: [] for name in videos}
  for step in schedule(videos):
    results = detector.step(step)
    assert list(results) == list(step)
    for name, result in results.items():
      got[name].append(result)
  return got, expected


def test_each_stream_equals_its_own_streaming_detector(model, cfg):
  kwargs = dict(smoothing="ema:0.5", threshold=None)
  got, expected = run_both(backends.KerasBackend(model), cfg, **kwargs)
  # A threshold in the middle of the scores: the alarms compare too.
  scores = [r.smoothed for results in expected.values() for r in results if r.score is not None]
  kwargs["threshold"] = float(np.median(scores))
  got, expected = run_both(backends.KerasBackend(model), cfg, **kwargs)
  for name in expected:
    assert_same_results(got[name], expected[name])
  assert 0 < sum(r.alarm for results in got.values() for r in results) < len(scores)


def test_one_encoder_call_per_frame_format_and_one_motion_call_per_step(model, cfg):
  counting = CountingBackend(backends.KerasBackend(model))
  videos = camera_videos()
  detector = multistream.MultiStreamDetector(counting, cfg.data, list(videos))
  span = cfg.data.clip_span
  steps = schedule(videos)
  for step in steps:
    encodes, predicts = len(counting.encode_batches), len(counting.predict_batches)
    results = detector.step(step)
    # gate and hall share a frame size: one batch; yard's gray frames another.
    formats = {(frame.shape, frame.dtype) for frame in step.values()}
    assert len(counting.encode_batches) - encodes == len(formats)
    assert sum(counting.encode_batches[encodes:]) == len(step)
    full = [name for name, result in results.items() if result.score is not None]
    assert counting.predict_batches[predicts:] == ([len(full)] if full else [])
  # The first step scores nobody; once the buffers are full, gate and hall share a batch.
  assert len(counting.predict_batches) < len(steps)
  assert max(counting.predict_batches) == 3 and span == 5


def test_reset_restarts_one_stream_only(model, cfg):
  frames = {"a": moving_frames(14, seed=1), "b": moving_frames(14, seed=2)}
  detector = multistream.MultiStreamDetector(model, cfg.data, ["a", "b"])
  alone = streaming.StreamingDetector(model, cfg.data)
  reference_b = [alone.process(frame) for frame in frames["b"]]
  got = {"a": [], "b": []}
  for t in range(14):
    if t == 8:
      detector.reset("a")  # A gap in camera a: its buffer and indices start again.
    for name, result in detector.step({n: f[t] for n, f in frames.items()}).items():
      got[name].append(result)
  assert_same_results(got["b"], reference_b)
  after = streaming.StreamingDetector(model, cfg.data)
  assert_same_results(got["a"][8:], [after.process(frame) for frame in frames["a"][8:]])
  assert [r.index for r in got["a"]] == list(range(8)) + list(range(6))


def test_per_stream_threshold_and_refusals(model, cfg):
  detector = multistream.MultiStreamDetector(model, cfg.data, ["a", "b"], threshold=1e9)
  detector.state("b").threshold = 0.0
  frames = moving_frames(8)
  for frame in frames:
    results = detector.step({"a": frame, "b": frame})
  assert results["a"].score == results["b"].score and results["b"].alarm
  assert not results["a"].alarm
  assert detector.step({}) == {}
  with pytest.raises(KeyError, match="Unknown streams"):
    detector.step({"c": frames[0]})
  with pytest.raises(ValueError, match="shape"):
    detector.step({"a": np.zeros((2, 2, 2, 2), np.uint8)})
  for names, message in (([], "at least one"), (["a", "a"], "unique"), (["a", ""], "empty")):
    with pytest.raises(errors.ConfigError, match=message):
      multistream.MultiStreamDetector(model, cfg.data, names)


def test_exported_runtimes_batch_like_their_streaming_detector(model, cfg):
  """The serving SavedModel and the LiteRT flatbuffers (batch dimension free) batch too."""
  from daml_tf import benchmark  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as work_dir:
    opened = benchmark.make_backends(model, cfg, ["saved_model", "litert_float32"], work_dir,
                                     threads=1)
    for backend in opened.values():
      got, expected = run_both(backend, cfg)
      for name in expected:
        assert_same_results(got[name], expected[name])
