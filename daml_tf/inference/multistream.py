"""Several cameras through one model: one encoder call and one motion-model call per step.

`MultiStreamDetector` holds one runtime (daml_tf.inference.backends) and one
`streaming.StreamState` per camera (its ring buffer of latent codes, smoother, threshold and
frame index). `step` takes the newest frame of every camera that has one, encodes them in one
batch and runs the motion model and the score on one batch of the cameras whose buffers are
full; each camera's FrameResult is the one a `streaming.StreamingDetector` of its own would
give (the same bookkeeping, only the networks see a batch; equal to float rounding, tested to
1e-5 relative). On a 2-core CPU a batch of several small frames costs much less than as many
single-frame calls: the per-call overhead of a runtime (graph dispatch, interpreter invoke) is
paid once (see `python -m daml_tf.benchmark --streams=...`).

`daml_tf.inference.multicamera` drives it over several videos or cameras.
"""

import collections
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np

from daml_tf import config as config_lib
from daml_tf import errors
from daml_tf.inference import backends
from daml_tf.inference import streaming
from daml_tf.inference.streaming import FrameResult
from daml_tf.models import scores


class MultiStreamDetector(streaming.ModelDetector):
  """Scores the frames of several camera streams, a step at a time.

  Args:
    model: a DAML model (restored, with its background set) or any backends.Backend.
    data_cfg: the model's DataConfig.
    streams: the names of the streams (cameras), unique.
    threshold: every stream's alarm threshold (set `state(name).threshold` for one of its own);
      None: no alarms.
    smoothing_window, smoothing, score, motion_norm: as for streaming.StreamingDetector, for
      every stream (each stream tracks its own motion).

  Raises:
    errors.ConfigError: no stream, an empty name, or a name given twice.

  Example:
    detector = MultiStreamDetector.from_model_dir("runs/demo", streams=("gate", "hall"))
    while True:
      results = detector.step({"gate": gate.read(), "hall": hall.read()})
      for camera, result in results.items():
        if result.alarm:
          notify(camera, result.index, result.smoothed)
  """

  def __init__(self, model, data_cfg: config_lib.DataConfig, streams: Sequence[str],
               threshold: Optional[float] = None, smoothing_window: int = 1,
               score: str = scores.DEFAULT_SCORE, smoothing: str = "",
               motion_norm=None):
    super().__init__(model, data_cfg, score, motion_norm)
    check_stream_names(streams)
    self._states = {name: self.new_state(threshold, smoothing_window, smoothing)
                    for name in streams}

  @classmethod
  def from_model_dir(cls, model_dir: str, streams: Sequence[str],
                     threshold: Optional[float] = None, smoothing_window: int = 1,
                     runtime_options: backends.RuntimeOptions = backends.RuntimeOptions(),
                     score: str = "",
                     smoothing: str = "") -> "MultiStreamDetector":
    """A detector for a training run, a serving export or a LiteRT export, as
    streaming.StreamingDetector.from_model_dir opens them (same arguments and errors), with
    one stream per name of `streams`."""
    opened, threshold, score = streaming.open_for_detection(model_dir, threshold,
                                                            runtime_options, score)
    logging.info("Multi-stream detector on %s for %d streams", opened.backend.name,
                 len(streams))
    return cls(opened.backend, opened.data_cfg, streams, threshold=threshold,
               smoothing_window=smoothing_window, score=score, smoothing=smoothing,
               motion_norm=scores.motion_norm_for(score, opened.motion_norm, model_dir))

  @property
  def streams(self) -> Tuple[str, ...]:
    return tuple(self._states)

  def state(self, stream: str) -> streaming.StreamState:
    """The state of one stream (its threshold and smoothing can be read and its threshold
    set); KeyError for an unknown name."""
    return self._states[stream]

  def reset(self, stream: str) -> None:
    """Forgets the frames of one stream (a gap in it, a new feed): its scoring restarts after
    clip_span frames and its indices at 0; the other streams go on."""
    self._states[stream].reset()

  def _encode(self, frames: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """{stream: code [1, h, w, c]}: one encoder call per frame shape and dtype among them.

    Frames of different sizes cannot share a tensor; cameras of one resolution and pixel
    format (the usual case) share one call.
    """
    groups = collections.defaultdict(list)
    for name, frame in frames.items():
      groups[(frame.shape, frame.dtype.str)].append(name)
    codes = {}
    for names in groups.values():
      batch = np.asarray(self._backend.encode_batch(np.stack([frames[n] for n in names])),
                         np.float32)
      for row, name in enumerate(names):
        # A copy: a view would keep the whole batch alive in the ring buffer.
        codes[name] = batch[row:row + 1].copy()
    return codes

  def _fused_step(self, checked: Mapping[str, np.ndarray], motion: Mapping[str, Any]
                  ) -> Optional[Dict[str, FrameResult]]:
    """step's results from one compiled call (graph_step), when every stream of the step gets a
    score and the frames share a shape and dtype (a steady state of same-model cameras);
    None otherwise. `motion`: each stream's start_motion."""
    if not self.fuses:
      return None
    pasts = [self._states[name].next_past_codes() for name in checked]
    if any(past is None for past in pasts) or len(
        {(frame.shape, frame.dtype.str) for frame in checked.values()}) != 1:
      return None
    fused = self.graph_step(np.stack(list(checked.values())), np.concatenate(pasts))
    if fused is None:
      return None
    codes, values, error_maps = fused
    results = {}
    for row, name in enumerate(checked):
      state = self._states[name]
      # A copy: a view would keep the whole batch alive in the ring buffer.
      index = state.add_code(codes[row:row + 1].copy())
      results[name] = self.finish(state, index, values[row], error_maps[row], motion[name])
    return results

  def step(self, frames: Mapping[str, np.ndarray]) -> Dict[str, FrameResult]:
    """Takes the next frame of some streams and scores them.

    Args:
      frames: {stream name: its next frame}, for any subset of the streams (a camera without a
        new frame is left out); frames as streaming.StreamingDetector.process takes them.

    Returns:
      {stream name: FrameResult}, in the order of `frames`; score None for a stream whose
      buffer does not yet hold clip_span earlier frames.

    Raises:
      KeyError: an unknown stream name.
      ValueError: a frame the detector cannot take (nothing of the step is kept then).
    """
    unknown = [name for name in frames if name not in self._states]
    if unknown:
      raise KeyError(f"Unknown streams {unknown}; the detector has {list(self._states)}.")
    checked = {name: self._states[name].check_frame(frame) for name, frame in frames.items()}
    if not checked:
      return {}
    motion = {name: self.start_motion(self._states[name], frame)
              for name, frame in checked.items()}
    fused = self._fused_step(checked, motion)
    if fused is not None:
      return fused
    codes = self._encode(checked)
    indices = {name: self._states[name].add_code(codes[name]) for name in checked}
    full = [name for name in checked if self._states[name].full]
    scored = {}
    if full:
      past = np.concatenate([self._states[name].past_codes() for name in full])
      observed = np.concatenate([self._states[name].observed_code() for name in full])
      predicted = np.asarray(self._backend.predict(past), np.float32)
      values, error_maps = self._score_and_map(predicted, observed)
      scored = {name: (values[row], error_maps[row]) for row, name in enumerate(full)}
    return {name: self.finish(self._states[name], indices[name], *scored.get(name, (None, None)),
                              motion[name])
            for name in checked}


def check_stream_names(names: Sequence[str]) -> None:
  """errors.ConfigError unless there is at least one name and every name is unique and
  non-empty."""
  if not names:
    raise errors.ConfigError("A multi-stream detector needs at least one stream.")
  if any(not name for name in names):
    raise errors.ConfigError(f"Stream names must not be empty, got {list(names)}.")
  duplicates = sorted(name for name, count in collections.Counter(names).items() if count > 1)
  if duplicates:
    raise errors.ConfigError(f"Stream names must be unique; {duplicates} given more than once.")
