"""Frame anomaly scores: how far the observed future is from the predicted one.

A score maps `ScoreInputs` (a batch of predicted and observed latent codes, and for the frame
scores the frame decoded from the prediction and the real one) to one float32 value per
example, higher meaning more anomalous. The maths is written once with TensorFlow ops, so the
same function runs inside exported graphs and eagerly on NumPy arrays in the streaming
runtimes.

`SCORES` is the registry: a new score is one function plus one entry.
"""

import dataclasses
import math
from typing import Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from daml_tf import errors

DEFAULT_SCORE = "latent_mean"


@dataclasses.dataclass(frozen=True)
class ScoreInputs:
  """What a score may look at, for a batch of B target frames.

  Attributes:
    predicted_latent: [B, h, w, c] the motion model's code of the target frame ([B, h, w, H*c]
      for a model of H prediction heads, see `heads_of`).
    observed_latent: [B, h, w, c] the target frame's own code.
    predicted_frame: [B, H, W, C] the predicted code (the first head's) decoded with the skips
      of the last input frame (background subtracted), or None when the score does not need it.
    observed_frame: [B, H, W, C] the target frame, background subtracted, or None.
    motion: [B, h, w] the target frame's motion map (daml_tf.data.motion_maps: the optical
      flow speed of each grid cell from the frame before, normalised per row on normal
      footage), or None when the score does not need it.
  """

  predicted_latent: tf.Tensor
  observed_latent: tf.Tensor
  predicted_frame: Optional[tf.Tensor] = None
  observed_frame: Optional[tf.Tensor] = None
  motion: Optional[tf.Tensor] = None


def heads_of(predicted_latent, observed_latent) -> Tuple[tf.Tensor, tf.Tensor]:
  """(predicted, observed) in float32, the observed code repeated once per prediction head.

  A motion model may stack H predictions of the target's code on the channel axis
  ([B, h, w, H*c], e.g. TwoHorizonMotion); each is compared with the same observed code, so the
  errors below are means (or sums) over every head's elements. With one head nothing changes.
  """
  predicted = tf.cast(predicted_latent, tf.float32)
  observed = tf.cast(observed_latent, tf.float32)
  if predicted.shape[-1] is not None and predicted.shape[-1] == observed.shape[-1]:
    # One head, known when the graph is built: no extra ops on the streaming path.
    return predicted, observed
  heads = tf.shape(predicted)[-1] // tf.shape(observed)[-1]
  return predicted, tf.tile(observed, tf.concat([tf.ones([tf.rank(observed) - 1], tf.int32),
                                                  [heads]], axis=0))


def squared_error(predicted_latent, observed_latent) -> tf.Tensor:
  """(z_hat - z)^2 of every element, every head's prediction against the observed code."""
  predicted, observed = heads_of(predicted_latent, observed_latent)
  return tf.square(predicted - observed)


def latent_sse(predicted_latent, observed_latent) -> tf.Tensor:
  """[B]: the latent loss's sum of squared errors over the code (and the heads) of each clip."""
  return tf.reduce_sum(squared_error(predicted_latent, observed_latent), axis=[1, 2, 3])


def latent_error_map(predicted_latent, observed_latent) -> tf.Tensor:
  """[B, h, w]: the squared latent error of each grid cell, averaged over channels (and heads)."""
  return tf.reduce_mean(squared_error(predicted_latent, observed_latent), axis=-1)


def _flat_map(inputs: ScoreInputs) -> tf.Tensor:
  error_map = latent_error_map(inputs.predicted_latent, inputs.observed_latent)
  return tf.reshape(error_map, [tf.shape(error_map)[0], -1])


def latent_error(predicted_latent, observed_latent) -> tf.Tensor:
  """The paper's score, [B, h, w, c] x 2 -> [B]: the mean of (z_hat - z)^2 over all elements
  (and over the heads of a multi-head prediction, see `heads_of`)."""
  error = squared_error(predicted_latent, observed_latent)
  return tf.reduce_mean(error, axis=tf.range(1, tf.rank(error)))


def latent_mean(inputs: ScoreInputs) -> tf.Tensor:
  """The paper's score (`latent_error`)."""
  return latent_error(inputs.predicted_latent, inputs.observed_latent)


def latent_max(inputs: ScoreInputs) -> tf.Tensor:
  """The error of the worst grid cell."""
  return tf.reduce_max(_flat_map(inputs), axis=1)


def latent_top(fraction: float) -> Callable[[ScoreInputs], tf.Tensor]:
  """Mean of the largest `fraction` of the grid cells' errors (at least one cell).

  A small object far from the camera covers few cells; the mean over the whole grid dilutes
  its error, the mean of the worst cells does not.
  """

  def score(inputs: ScoreInputs) -> tf.Tensor:
    cells = _flat_map(inputs)
    # From the dynamic shape: inside an exported graph the grid size may be unknown.
    num_cells = tf.cast(tf.shape(cells)[1], tf.float32)
    count = tf.maximum(1, tf.cast(tf.round(fraction * num_cells), tf.int32))
    return tf.reduce_mean(tf.math.top_k(cells, k=count).values, axis=1)

  return score


def cosine_distance(inputs: ScoreInputs) -> tf.Tensor:
  """1 - cos(predicted, observed) over the flattened codes (every head's, see `heads_of`)."""
  predicted, observed = heads_of(inputs.predicted_latent, inputs.observed_latent)
  batch = tf.shape(predicted)[0]
  predicted = tf.reshape(predicted, [batch, -1])
  observed = tf.reshape(observed, [batch, -1])
  cosine = tf.reduce_sum(predicted * observed, axis=1) / tf.maximum(
      tf.norm(predicted, axis=1) * tf.norm(observed, axis=1), 1e-12)
  return 1.0 - cosine


def frame_psnr(inputs: ScoreInputs) -> tf.Tensor:
  """Minus the PSNR of the predicted frame against the real one (pixel range 1), as in FFP.

  Negated so that higher is more anomalous: 10 * log10(MSE).
  """
  error = tf.square(tf.cast(inputs.predicted_frame, tf.float32) -
                    tf.cast(inputs.observed_frame, tf.float32))
  mse = tf.reduce_mean(tf.reshape(error, [tf.shape(error)[0], -1]), axis=1)
  return 10.0 * tf.math.log(tf.maximum(mse, 1e-12)) / math.log(10.0)


def motion_weights(motion, gain: Optional[float]):
  """Each cell's weight, `1 + gain * motion`, or `motion` itself when gain is None (the
  product: a cell that does not move counts for nothing). Operators only, so the same line
  weighs tensors in a graph and NumPy arrays on the host.

  Why: the latent error is measured at the model's low resolution, where a small object moving
  fast far from the camera covers a few cells and changes them little; its optical flow at the
  camera's resolution is large. With `1 + gain * motion` the latent error still counts where
  nothing moves (an object left behind, a person lying still).
  """
  return motion if gain is None else 1.0 + gain * motion


def motion_weighted(gain: Optional[float]
                    ) -> Callable[[tf.Tensor, tf.Tensor], Tuple[tf.Tensor, tf.Tensor]]:
  """(error maps [B, h, w], motion maps [B, h, w]) -> (scores [B], weighted maps [B, h, w]):
  each cell's latent error times its `motion_weights`; the score is the mean of the weighted
  map over the grid, the weighted map what the heatmap shows (and what a mask of cells
  averages, see service.masks)."""

  def weigh(error_maps, motion):
    weighted = tf.cast(error_maps, tf.float32) * motion_weights(tf.cast(motion, tf.float32),
                                                                gain)
    return tf.reduce_mean(weighted, axis=[1, 2]), weighted

  return weigh


def motion_weighted_host(gain: Optional[float]
                         ) -> Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
  """`motion_weighted` on host arrays, with NumPy: at batch 1 a TensorFlow call costs about a
  millisecond of Python around a few microseconds of arithmetic."""

  def weigh(error_maps, motion):
    # Python floats do not promote float32 arrays (NumPy 2): the result stays float32.
    weighted = np.asarray(error_maps, np.float32) * motion_weights(np.asarray(motion, np.float32),
                                                                   gain)
    return weighted.mean(axis=(1, 2), dtype=np.float32), weighted

  return weigh


@dataclasses.dataclass(frozen=True)
class Score:
  """A registered score.

  Attributes:
    name: the --score value.
    fn: ScoreInputs -> [B].
    needs_frames: it reads predicted_frame and observed_frame (the decoder runs too).
    parts: for a fusion, the scores it standardises and adds; their mean and spread on normal
      training frames are stored in the model directory (score_stats.json).
    weigh: for a score of motion evidence, (latent error maps [B, h, w], motion maps
      [B, h, w]) -> (scores [B], weighted maps [B, h, w]); it reads ScoreInputs.motion, whose
      normalisation is stored in the model directory (motion_norm.json). The streaming
      runtimes compute the motion map beside the model and apply `host_weigh` (the same maths
      with NumPy) to the error map the model returns.
    host_weigh: `weigh` for host arrays.
  """

  name: str
  fn: Optional[Callable[[ScoreInputs], tf.Tensor]]
  needs_frames: bool = False
  parts: Tuple[str, ...] = ()
  weigh: Optional[Callable[[tf.Tensor, tf.Tensor], Tuple[tf.Tensor, tf.Tensor]]] = None
  host_weigh: Optional[Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]] = None

  @property
  def needs_motion(self) -> bool:
    return self.weigh is not None


def motion_score(name: str, gain: Optional[float]) -> Score:
  """A registered score of motion evidence: `motion_weighted(gain)` of the latent error map."""
  weigh = motion_weighted(gain)

  def score(inputs: ScoreInputs) -> tf.Tensor:
    if inputs.motion is None:
      raise ValueError(f"Score {name!r} needs the motion maps of the target frames.")
    return weigh(latent_error_map(inputs.predicted_latent, inputs.observed_latent),
                 inputs.motion)[0]

  return Score(name, score, weigh=weigh, host_weigh=motion_weighted_host(gain))


SCORES: Dict[str, Score] = {
    score.name: score for score in (
        Score("latent_mean", latent_mean),
        Score("latent_max", latent_max),
        Score("latent_top1", latent_top(0.01)),
        Score("latent_top5", latent_top(0.05)),
        Score("latent_top10", latent_top(0.10)),
        Score("cosine", cosine_distance),
        Score("frame_psnr", frame_psnr, needs_frames=True),
        Score("fusion", None, needs_frames=True, parts=("latent_mean", "frame_psnr")),
        motion_score("motion_weighted", gain=4.0),
        motion_score("motion_product", gain=None),
    )
}


def get_score(name: str) -> Score:
  """The registered score `name`; ConfigError (a ValueError) naming the choices."""
  if name not in SCORES:
    raise errors.ConfigError(f"--score must be one of {', '.join(SCORES)}, got {name!r}.")
  return SCORES[name]


def motion_norm_for(name: str, motion_norm, where: str = ""):
  """The flow normalisation (data.motion_maps.MotionNorm) score `name` uses: `motion_norm` for a
  score of motion evidence, None for the other scores.

  Raises:
    errors.ConfigError: a score of motion evidence without one (`where`: its model).
  """
  if not get_score(name).needs_motion:
    return None
  if motion_norm is None:
    raise errors.ConfigError(
        f"--score={name} needs the optical flow's normalisation fitted on normal footage "
        f"(motion_norm.json), and there is none{' with ' + where if where else ''}: run "
        f"python -m daml_tf.calibrate --score={name} (then export again, for an export).")
  return motion_norm


def check_runtime(name: str, has_decoder: bool) -> Score:
  """The score `name`, or ValueError when it needs the decoder and the runtime has none."""
  score = get_score(name)
  if score.needs_frames and not has_decoder:
    raise ValueError(
        f"Score {name!r} decodes the predicted frame; this runtime holds only the encoder and "
        "the motion model. Use a latent score (" +
        ", ".join(n for n, s in SCORES.items() if not s.needs_frames) +
        ") or score with the Keras model of a training run.")
  return score


def graph_score_and_map(name: str, predicted: tf.Tensor,
                        observed: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """(scores [B], error maps [B, h, w]) of predicted and observed codes, as graph ops (inside
  the streaming detector's one call per frame, or host_scorer's)."""
  return (compute(name, ScoreInputs(predicted, observed)), latent_error_map(predicted, observed))


def host_weigher(name: str) -> Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
  """The motion weighting of score `name` for host arrays: (error maps [B, h, w], motion maps
  [B, h, w]) -> (scores [B], weighted maps [B, h, w]) float32 (motion_weighted_host)."""
  return get_score(name).host_weigh


def host_scorer(name: str) -> Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
  """The latent score `name` and the error map for host arrays (the streaming runtimes).

  (predicted, observed) codes [B, h, w, c] -> (scores [B], error maps [B, h, w]), float32.
  One graph call per frame rather than a dozen eager ops: with Python 3.11, TensorFlow keeps a
  little memory per op call it runs (tensorflow/tensorflow#62551), which adds up on an endless
  stream; the maths is that of `compute` and `latent_error_map` all the same.
  """
  check_runtime(name, has_decoder=False)

  @tf.function(reduce_retracing=True)
  def score_and_map(predicted, observed):
    return graph_score_and_map(name, predicted, observed)

  def scorer(predicted_latent, observed_latent):
    values, error_maps = score_and_map(predicted_latent, observed_latent)
    return values.numpy(), error_maps.numpy()

  return scorer


def compute(name: str, inputs: ScoreInputs,
            stats: Optional[Mapping[str, Tuple[float, float]]] = None) -> tf.Tensor:
  """The score `name` of a batch.

  Args:
    name: a SCORES key.
    inputs: the batch.
    stats: for a fusion, {part: (mean, std)} of each part on normal training frames.
  """
  score = get_score(name)
  if not score.parts:
    return score.fn(inputs)
  if stats is None or any(part not in stats for part in score.parts):
    raise ValueError(f"Score {name!r} needs the normal-frame statistics of "
                     f"{', '.join(score.parts)} (score_stats.json of the model directory).")
  total = 0.0
  for part in score.parts:
    mean, std = stats[part]
    total += (compute(part, inputs) - mean) / max(std, 1e-12)
  return total
