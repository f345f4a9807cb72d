"""Online (live camera) anomaly detection: one frame in, one score out.

`StreamingDetector` encodes each incoming frame once and keeps in a ring buffer exactly the
latent codes that the clip geometry still needs, so a frame costs one encoder pass plus the
motion model, and its scores are those of the batch evaluation (`evaluation.VideoScorer`) on the
same video. The networks run on a runtime of daml_tf.inference.backends (the Keras model of a
training run, a serving SavedModel, LiteRT flatbuffers); `from_model_dir` opens any of them.
`daml_tf.inference.detection` drives a detector over a recorded video. A stream's state between
frames (code buffer, smoother, threshold, index) is a `StreamState`, which
`daml_tf.inference.multistream` keeps per camera to score several cameras in one batch.
"""

import collections
from concurrent import futures
import dataclasses
from typing import Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from daml_tf import config as config_lib
from daml_tf import errors
from daml_tf import smoothing as smoothing_lib
from daml_tf.data import motion_maps
from daml_tf.inference import backends
from daml_tf.models import DAML
from daml_tf.models import scores

# Float frames a little outside [0, 1] (rounding in a camera pipeline) are still accepted.
_FLOAT_RANGE_SLACK = 1e-3


@dataclasses.dataclass(frozen=True)
class FrameResult:
  """The detector's verdict on one frame.

  Attributes:
    index: 0-based index of the frame since the start (or the last reset).
    score: raw anomaly score (the detector's score, by default the mean squared error of the
      predicted latent code), or None while the buffer does not yet hold the frames this frame
      is predicted from.
    smoothed: the causally smoothed score (the raw one without smoothing), or None when
      `score` is None.
    alarm: smoothed > threshold (always False without a threshold or a score).
    error_map: float32 [h, w], the latent error of each cell of the latent grid (the score's
      spatial layout, see daml_tf.localize), or None when `score` is None.
  """

  index: int
  score: Optional[float]
  smoothed: Optional[float]
  alarm: bool
  # Not compared: results stay comparable with ==, as before the map was added.
  error_map: Optional[np.ndarray] = dataclasses.field(default=None, compare=False)


def check_geometry(backend: backends.Backend, data_cfg: config_lib.DataConfig) -> None:
  """ValueError unless the backend's model has the clip config's size, channels and k."""
  model_geometry = (tuple(backend.image_size), backend.channels, backend.time_steps)
  cfg_geometry = (tuple(data_cfg.image_size), data_cfg.channels, data_cfg.time_steps)
  if model_geometry != cfg_geometry:
    raise ValueError(f"Model geometry (size, channels, k) {model_geometry} differs from the "
                     f"data config's {cfg_geometry}.")


def as_backend(model) -> backends.Backend:
  """A DAML model wrapped in a backends.KerasBackend; any other backend as it is."""
  return backends.KerasBackend(model) if isinstance(model, DAML) else model


def resolve_threshold(opened: backends.OpenedModel, model_dir: str,
                      threshold: Optional[float], score: str) -> Optional[float]:
  """`threshold` if given, else the one stored with the model (None without one).

  Raises:
    errors.ConfigError: the stored threshold is for another score than `score`.
  """
  stored = opened.threshold
  if threshold is not None or stored is None:
    return threshold
  # Thresholds of earlier versions carry no score: they were for the paper's.
  stored_score = stored.get("score", scores.DEFAULT_SCORE)
  if stored_score != score:
    raise errors.ConfigError(
        f"The threshold stored with {model_dir} is for --score={stored_score}, not "
        f"{score}: pass --threshold, or recalibrate with python -m daml_tf.calibrate "
        f"--score={score}.")
  logging.info("Threshold %.6g (quantile %s of normal scores) stored with %s",
               stored["threshold"], stored.get("quantile"), model_dir)
  return stored["threshold"]


def open_for_detection(model_dir: str, threshold: Optional[float],
                       runtime_options: backends.RuntimeOptions,
                       score: str) -> Tuple[backends.OpenedModel, Optional[float], str]:
  """(the opened model, its threshold, its score) for a detector's from_model_dir: `score`, or
  the stored threshold's, or the model's; `threshold` or the one stored for that score
  (resolve_threshold)."""
  opened = backends.open_model(model_dir, runtime_options)
  # Without a score asked for, the one the stored threshold was calibrated for (calibrate
  # --score=... then detect), else the run's.
  score = score or (opened.threshold or {}).get("score") or opened.score
  return opened, resolve_threshold(opened, model_dir, threshold, score), score


class ModelDetector:
  """What a detector of one or of several streams holds: the runtime, the model's clip config
  and the frame score.

  A score of motion evidence (models.scores, `needs_motion`) takes each frame's motion map
  (data.motion_maps.MotionTracker, one per stream): it is computed on the host in a thread of
  its own while the model's call runs (OpenCV and TensorFlow both release the GIL), then the
  score's `weigh` combines it with the latent error map the call returns. The model's call and
  the exports are the same as for the other scores.

  Args:
    model: a DAML model (restored, with its background set), run by a backends.KerasBackend,
      or any backends.Backend.
    data_cfg: the model's DataConfig; ValueError unless it matches the model's geometry.
    score: a latent score name of daml_tf.models.scores.SCORES.
    motion_norm: the motion normalisation (run_dir.load_motion_norm) a score of motion
      evidence needs; errors.ConfigError without one.
  """

  def __init__(self, model, data_cfg: config_lib.DataConfig, score: str,
               motion_norm: Optional[motion_maps.MotionNorm] = None):
    backend = as_backend(model)
    check_geometry(backend, data_cfg)
    self._backend = backend
    self._data_cfg = data_cfg
    self.score_name = scores.check_runtime(score, has_decoder=False).name
    self.motion_norm = scores.motion_norm_for(self.score_name, motion_norm)
    # With motion evidence, the model's call computes the paper's score (unused) and the error
    # map; the weighting happens on the host once the motion map is there.
    self._model_score = scores.DEFAULT_SCORE if self.motion_norm else self.score_name
    self._score_and_map = scores.host_scorer(self._model_score)
    self._weigh = scores.host_weigher(self.score_name) if self.motion_norm else None
    # Two workers: the flows of two cameras at once on the 2-core machines this targets; a
    # single camera's flow overlaps the model's call either way.
    self._flow_pool = (futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="flow")
                       if self.motion_norm else None)
    self._graph_steps = {}
    # LiteRT cannot be traced: its frames take the separate calls (see graph_step).
    self.fuses = backends.traceable(backend)

  def new_state(self, threshold: Optional[float] = None, smoothing_window: int = 1,
                smoothing: str = "") -> "StreamState":
    """A stream's state for this detector (with a motion tracker for a motion score)."""
    return StreamState(self._data_cfg, threshold, smoothing_window, smoothing,
                       motion_norm=self.motion_norm)

  def start_motion(self, state: "StreamState", frame: np.ndarray
                   ) -> Optional[futures.Future]:
    """Starts the motion map of the stream's next frame in the flow thread (None without a
    motion score); `finish` collects it. Frames of one stream must be started in order."""
    if state.motion is None:
      return None
    return self._flow_pool.submit(state.motion.update, frame)

  def finish(self, state: "StreamState", index: int, score=None, error_map=None,
             motion: Optional[futures.Future] = None) -> FrameResult:
    """state.result of a frame; for a motion score, its latent error map weighted by the
    motion map `motion` (from start_motion): the score is its mean, and the result's error map
    the weighted one."""
    if motion is not None:
      motion_map = motion.result()
      if score is not None:
        values, weighted = self._weigh(np.asarray(error_map, np.float32)[np.newaxis],
                                       motion_map[np.newaxis])
        score, error_map = values[0], weighted[0]
    return state.result(index, score, error_map)

  def close(self) -> None:
    """Stops the flow thread (a no-op without a motion score)."""
    if self._flow_pool is not None:
      self._flow_pool.shutdown(wait=True)

  def graph_step(self, frames: np.ndarray, past: np.ndarray
                 ) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Encodes frames, predicts from past codes and scores, in one compiled call.

    The same maths as encode, predict and the host scorer one after the other, traced into one
    graph: at batch 1 the Python around each TensorFlow call costs about as much as the
    networks, so one call instead of three is most of a frame's cost saved.

    Args:
      frames: [N, H, W, C] checked frames (check_frame), one shape and dtype.
      past: [N, k, ...] float32, row i the codes frames[i] is predicted from.

    Returns:
      (codes [N, h, w, c], scores [N], error maps [N, h, w]), or None when the runtime cannot
      be traced (LiteRT): the caller then makes the separate calls.
    """
    if not self.fuses:
      return None
    key = (frames.shape[-1], frames.dtype.str, past.shape[1:])
    step = self._graph_steps.get(key)
    if step is None:
      backend, name = self._backend, self._model_score

      def fused(frames, past):
        codes = backend.graph_encode(frames)
        values, error_maps = scores.graph_score_and_map(
            name, backend.graph_predict(past), codes)
        return codes, values, error_maps

      # A concrete function: calling it skips tf.function's argument matching, a good part of
      # the Python cost per call.
      step = tf.function(fused).get_concrete_function(
          tf.TensorSpec([None, None, None, frames.shape[-1]], tf.as_dtype(frames.dtype)),
          tf.TensorSpec((None,) + past.shape[1:], tf.float32))
      self._graph_steps[key] = step
    codes, values, error_maps = step(tf.constant(frames), tf.constant(past, tf.float32))
    return codes.numpy(), values.numpy(), error_maps.numpy()

  @property
  def data_cfg(self) -> config_lib.DataConfig:
    return self._data_cfg

  @property
  def backend(self) -> backends.Backend:
    return self._backend


class StreamState:
  """What one camera's stream carries from frame to frame: the ring buffer of latent codes,
  the smoother, the threshold and the frame index.

  The networks are not here: `StreamingDetector` runs them for one stream, and
  `multistream.MultiStreamDetector` for the frames of several streams at once, so both score
  a stream with the same bookkeeping.

  Args:
    data_cfg: the model's DataConfig (image size, channels, k, interval, delta).
    threshold: see StreamingDetector.
    smoothing_window: see StreamingDetector.
    smoothing: see StreamingDetector.
    motion_norm: for a score of motion evidence, its normalisation: the state then tracks the
      stream's motion (`motion`).

  Attributes:
    threshold: the raw (smoothed) score above which a frame raises an alarm; None: never.
    smoothing: the parsed smoothing_lib.Smoothing.
    smoothing_window: as given.
    motion: the stream's motion_maps.MotionTracker, or None.
  """

  def __init__(self, data_cfg: config_lib.DataConfig, threshold: Optional[float] = None,
               smoothing_window: int = 1, smoothing: str = "",
               motion_norm: Optional[motion_maps.MotionNorm] = None):
    self.motion = None if motion_norm is None else motion_maps.MotionTracker(motion_norm)
    self._data_cfg = data_cfg
    self.threshold = None if threshold is None else float(threshold)
    if smoothing_window < 1:
      raise ValueError(f"smoothing window must be >= 1, got {smoothing_window}.")
    self.smoothing = smoothing_lib.parse(smoothing or (
        f"ma:{smoothing_window}" if smoothing_window > 1 else "none"))
    self._smoother = smoothing_lib.CausalSmoother(self.smoothing)
    self.smoothing_window = smoothing_window
    k, interval = data_cfg.time_steps, data_cfg.interval
    # With the target in the last slot, input i sits at slot i * interval (see
    # StreamingDetector).
    self._input_slots = tuple(i * interval for i in range(k))
    self._codes = collections.deque(maxlen=data_cfg.clip_span + 1)
    self._warned_shape = None
    self._next_index = 0

  @property
  def buffer_capacity(self) -> int:
    return self._codes.maxlen

  @property
  def buffered_codes(self) -> Tuple[np.ndarray, ...]:
    return tuple(self._codes)

  @property
  def full(self) -> bool:
    """The buffer holds every code the newest frame is predicted from: it gets a score."""
    return len(self._codes) == self._codes.maxlen

  def reset(self) -> None:
    self._codes.clear()
    self._smoother.reset()
    self._next_index = 0
    if self.motion is not None:
      self.motion.reset()

  def check_frame(self, frame) -> np.ndarray:
    """The frame as the backends take it: [H, W, 1|3], alpha dropped; ValueError if unusable.

    Warns once per new frame shape that differs from the model's.
    """
    frame = np.asarray(frame)
    if frame.ndim == 2:
      frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[-1] not in (1, 2, 3, 4):
      raise ValueError(f"A frame must be [H, W], [H, W, 1|3] (or with alpha), got shape "
                       f"{frame.shape}.")
    if frame.shape[-1] in (2, 4):
      # Alpha carries no appearance (pipeline.to_channels drops it too).
      frame = frame[..., :-1]
    if np.issubdtype(frame.dtype, np.floating):
      low, high = float(frame.min()), float(frame.max())
      if low < -_FLOAT_RANGE_SLACK or high > 1 + _FLOAT_RANGE_SLACK:
        raise ValueError(f"Float frames must be in [0, 1], got values in [{low:.4g}, "
                         f"{high:.4g}]; pass uint8 frames for 0..255 pixel values.")
      frame = frame.astype(np.float32, copy=False)
    elif frame.dtype not in (np.uint8, np.uint16):
      raise ValueError(f"Frames must be uint8, uint16 or float in [0, 1], got {frame.dtype}.")
    model_shape = tuple(self._data_cfg.image_size) + (self._data_cfg.channels,)
    if frame.shape != model_shape and frame.shape != self._warned_shape:
      self._warned_shape = frame.shape
      logging.warning(
          "Input frames are %dx%dx%d, the model takes %dx%dx%d: resizing bilinearly%s, as the "
          "training frames were.", frame.shape[0], frame.shape[1], frame.shape[2],
          *model_shape,
          "" if frame.shape[-1] == model_shape[-1] else
          (" and converting to gray" if model_shape[-1] == 1 else " and converting to RGB"))
    return np.ascontiguousarray(frame)

  def add_code(self, code: np.ndarray) -> int:
    """Appends the newest frame's code, float32 [1, h, w, c]; returns the frame's index."""
    self._codes.append(np.asarray(code, np.float32))
    index = self._next_index
    self._next_index += 1
    return index

  def next_past_codes(self) -> Optional[np.ndarray]:
    """[1, k, h, w, c]: the codes the next frame will be predicted from; None if the next
    frame gets no score (too few frames before it)."""
    # Appending the next code drops the oldest one when the buffer is full, shifting every
    # slot by one.
    offset = len(self._codes) - (self._codes.maxlen - 1)
    if offset < 0:
      return None
    return np.stack([self._codes[slot + offset] for slot in self._input_slots], axis=1)

  def past_codes(self) -> np.ndarray:
    """[1, k, h, w, c]: the codes the newest frame is predicted from (only when `full`)."""
    return np.stack([self._codes[slot] for slot in self._input_slots], axis=1)

  def observed_code(self) -> np.ndarray:
    """[1, h, w, c]: the newest frame's code."""
    return self._codes[-1]

  def result(self, index: int, score: Optional[float] = None,
             error_map: Optional[np.ndarray] = None) -> FrameResult:
    """The FrameResult of frame `index`: smoothed and thresholded if it has a score."""
    if score is None:
      return FrameResult(index=index, score=None, smoothed=None, alarm=False)
    score = float(score)
    smoothed = self._smoother.update(score)
    alarm = self.threshold is not None and smoothed > self.threshold
    return FrameResult(index=index, score=score, smoothed=smoothed, alarm=bool(alarm),
                       error_map=error_map)


class StreamingDetector(ModelDetector):
  """Scores frames one at a time, as they come from a camera.

  Each frame is preprocessed exactly as training and evaluation do (gray/RGB conversion with
  tf.image, bilinear resize to the model size, scaling to [0, 1], minus the model's background)
  and encoded once, by the backend (a Keras model, a serving SavedModel or LiteRT flatbuffers;
  see `Backend`). The latent codes of the last `clip_span + 1` frames sit in a ring buffer:
  frame t is predicted from the codes of frames t - delta - (k-1-i) * interval, i = 0..k-1, the
  oldest of which is t - clip_span. The first `clip_span` frames therefore get no score (None),
  as in the batch evaluation. The score is a latent score of daml_tf.models.scores (by default
  the paper's mean squared error of the predicted code), computed here in float32. The stream's
  state (buffer, smoother, threshold, index) is a `StreamState`.

  Args:
    model: a DAML model (restored, with its background set), run by a backends.KerasBackend,
      or any backends.Backend.
    data_cfg: the model's DataConfig (image size, channels, k, interval, delta).
    threshold: raw (smoothed) score above which a frame raises an alarm; None: never.
    smoothing_window: causal moving average over this many raw scores before thresholding.
    score: a latent score name of daml_tf.models.scores.SCORES.
    smoothing: a causal daml_tf.smoothing spec ("ma:N", "ema:A"); overrides smoothing_window.
    motion_norm: see ModelDetector.

  Example:
    detector = StreamingDetector.from_model_dir("runs/demo", smoothing_window=5)
    for frame in camera:                      # uint8 [H, W, 3] at any size
      result = detector.process(frame)
      if result.alarm:
        notify(result.index, result.smoothed)
  """

  def __init__(self, model, data_cfg: config_lib.DataConfig,
               threshold: Optional[float] = None, smoothing_window: int = 1,
               score: str = scores.DEFAULT_SCORE, smoothing: str = "",
               motion_norm: Optional[motion_maps.MotionNorm] = None):
    super().__init__(model, data_cfg, score, motion_norm)
    self._state = self.new_state(threshold, smoothing_window, smoothing)

  @classmethod
  def from_model_dir(cls, model_dir: str, threshold: Optional[float] = None,
                     smoothing_window: int = 1,
                     runtime_options: backends.RuntimeOptions = backends.RuntimeOptions(),
                     score: str = "",
                     smoothing: str = "") -> "StreamingDetector":
    """A detector for a training run, a serving export or a LiteRT export.

    Args:
      model_dir: a training run's directory (config.json, checkpoints/; its newest checkpoint),
        a serving SavedModel version directory, a LiteRT export directory, or a directory of
        numbered versions of either (the highest is used, as TF Serving does).
      threshold: overrides the stored threshold (threshold.json of a run, the one recorded in
        an export); with neither, no alarms.
      smoothing_window: see the class.
      runtime_options: what to ask of the runtime (backends.RuntimeOptions: the weight
        precision of a LiteRT export).
      score: overrides the score the run was configured with (or the export recorded).
      smoothing: see the class.

    Raises:
      FileNotFoundError: model_dir is none of these, or has no checkpoint.
      errors.DataError: an export without the clip geometry (interval, delta).
      errors.ConfigError: the stored threshold is for another score than the one asked for.
    """
    opened, threshold, score = open_for_detection(model_dir, threshold, runtime_options, score)
    logging.info("Streaming detector on %s", opened.backend.name)
    return cls(opened.backend, opened.data_cfg, threshold=threshold,
               smoothing_window=smoothing_window, score=score, smoothing=smoothing,
               motion_norm=scores.motion_norm_for(score, opened.motion_norm, model_dir))

  @property
  def threshold(self) -> Optional[float]:
    return self._state.threshold

  @threshold.setter
  def threshold(self, value: Optional[float]) -> None:
    self._state.threshold = None if value is None else float(value)

  @property
  def smoothing(self) -> smoothing_lib.Smoothing:
    return self._state.smoothing

  @property
  def smoothing_window(self) -> int:
    return self._state.smoothing_window

  @property
  def buffer_capacity(self) -> int:
    """Latent codes kept: clip_span + 1 (the oldest input through the current frame)."""
    return self._state.buffer_capacity

  @property
  def buffered_codes(self) -> Tuple[np.ndarray, ...]:
    """The buffered latent codes, oldest first, each [1, h, w, c]."""
    return self._state.buffered_codes

  def reset(self) -> None:
    """Forgets all frames (a new stream, or a cut in this one): scoring restarts after
    clip_span frames and indices restart at 0."""
    self._state.reset()

  def process(self, frame) -> FrameResult:
    """Takes the next frame of the stream and scores it.

    Args:
      frame: uint8 (or uint16) [H, W, C] or [H, W], or float in [0, 1]; C = 1 or 3 (an alpha
        channel is dropped); any size (resized to the model's). The SavedModel backend takes
        uint8 only.

    Returns:
      FrameResult; score None while fewer than clip_span frames precede this one.
    """
    state = self._state
    frame = state.check_frame(frame)
    motion = self.start_motion(state, frame)
    past = state.next_past_codes() if self.fuses else None
    fused = None if past is None else self.graph_step(frame[np.newaxis], past)
    if fused is not None:
      code, score, error_map = fused
      return self.finish(state, state.add_code(code), score[0], error_map[0], motion)
    index = state.add_code(self._backend.encode(frame))
    if not state.full:
      return self.finish(state, index, motion=motion)
    predicted = np.asarray(self._backend.predict(state.past_codes()), np.float32)
    score, error_map = self._score_and_map(predicted, state.observed_code())
    return self.finish(state, index, score[0], error_map[0], motion)
