"""Two-level motion model: the motion error on the finest encoder level beside the latent one."""

from typing import Sequence

import keras

from daml_tf.models import blocks
from daml_tf.models.motion import MotionModel


@keras.saving.register_keras_serializable(package="daml_tf")
class TwoLevelMotion(blocks.LatentCodeInputs, blocks.ArgsConfig, keras.Model):
  """A MotionModel on the finest encoder level's features and one on the latent codes.

  Each frame's code (`code_of`) is its finest-level features rearranged onto the latent grid
  (space-to-depth by the grid's factor f: [H, W, c0] -> [h, w, f*f*c0]) followed by its latent
  code, each part multiplied by a constant scale: [h, w, f*f*c0 + c]. The *fine head* reads the
  finest-level features of the newest `head_steps` codes and predicts the target's, at the
  clip's horizon (delta); the *latent head* reads the latent codes of the oldest `head_steps`
  codes, so the same target lies `(time_steps - head_steps) * interval` frames further ahead of
  its inputs, as TwoHorizonMotion's far head. The prediction has the code's layout, so the
  latent loss, every latent score and the per-cell error map compare it with the observed code
  element by element, and caches, exports and runtimes keep one code per frame as for any
  motion model.

  The scales make each part's mean squared error count equally in `latent_mean` (the mean
  over the code's elements is then the mean of the two parts' means): the finest level has
  f*f*c0 elements per cell, the latent code c, and without them the part with more elements
  would dominate. They are constants of the geometry; each head computes on the unscaled
  features.

  Why: a far pedestrian or cyclist covers a few cells of the latent grid, each f x f pixels of
  the finest level. On the frozen codes of 13 Ped2 runs, a motion model on the finest level
  raised the per-video AUC in 12 of them but not the pooled (online) one, and the latent model
  8 frames ahead raised the online AUC in all 13; their summed errors beat the paper's model on
  both (experiments/ped2_accuracy/horizon_ablation.py, experiments/ped2_accuracy/README.md).

  Args:
    time_steps: k, the number of past codes the model takes (> head_steps).
    fine_shape: (H, W, c0) of the finest encoder level's features (the first skip).
    latent_shape: (h, w, c) of the latent code; H and W must be f*h and f*w.
    head_steps: codes per head.
    leaky_relu_slope, weight_decay, num_blocks, bottleneck_channels, sync_batchnorm: as
      MotionModel's, for both heads.

  Example:
  >>> motion = TwoLevelMotion(time_steps=6, fine_shape=(32, 48, 8), latent_shape=(16, 24, 16),
  ...                         head_steps=4)
  >>> motion.code_shape
  (16, 24, 48)
  >>> tuple(motion(np.zeros((2, 6, 16, 24, 48), "float32")).shape)
  (2, 16, 24, 48)
  """

  CONFIG_ARGS = ("time_steps", "fine_shape", "latent_shape", "head_steps", "leaky_relu_slope",
                 "weight_decay", "num_blocks", "bottleneck_channels", "sync_batchnorm")

  def __init__(self, time_steps: int, fine_shape: Sequence[int], latent_shape: Sequence[int],
               head_steps: int, leaky_relu_slope: float = 0.2, weight_decay: float = 0.001,
               num_blocks: int = 3, bottleneck_channels: int = 0, sync_batchnorm: bool = False,
               **kwargs):
    if not 2 <= head_steps < time_steps:
      raise ValueError(f"head_steps must be in [2, time_steps), got {head_steps} with "
                       f"time_steps {time_steps}.")
    fine_shape = tuple(int(d) for d in fine_shape)
    latent_shape = tuple(int(d) for d in latent_shape)
    factor = fine_shape[0] // latent_shape[0]
    if factor < 2 or fine_shape[:2] != (factor * latent_shape[0], factor * latent_shape[1]):
      raise ValueError(f"The fine level {fine_shape} must be the latent grid {latent_shape} "
                       "times an integer factor >= 2 in both directions (levels >= 2).")
    self._factor = factor
    self._fine_channels = factor * factor * fine_shape[-1]
    code_channels = self._fine_channels + latent_shape[-1]
    # Squared scales: a part of n of the N elements of a cell gets N / (2 n).
    self._fine_scale = (code_channels / (2.0 * self._fine_channels))**0.5
    self._latent_scale = (code_channels / (2.0 * latent_shape[-1]))**0.5
    head_args = dict(time_steps=head_steps, leaky_relu_slope=leaky_relu_slope,
                     weight_decay=weight_decay, num_blocks=num_blocks,
                     bottleneck_channels=bottleneck_channels, sync_batchnorm=sync_batchnorm)
    codes = keras.Input((time_steps,) + latent_shape[:2] + (code_channels,), name="past_codes")
    fine = codes[:, time_steps - head_steps:, ..., :self._fine_channels] / self._fine_scale
    fine = keras.ops.reshape(fine, (-1,) + latent_shape[:2] + (self._fine_channels,))
    fine = keras.ops.reshape(keras.ops.depth_to_space(fine, factor),
                             (-1, head_steps) + fine_shape)
    latent = codes[:, :head_steps, ..., self._fine_channels:] / self._latent_scale
    fine_predicted = MotionModel(latent_shape=fine_shape, name="fine_head", **head_args)(fine)
    latent_predicted = MotionModel(latent_shape=latent_shape, name="latent_head",
                                   **head_args)(latent)
    predicted = keras.layers.Concatenate(axis=-1, dtype="float32", name="parts")([
        keras.ops.space_to_depth(fine_predicted, factor) * self._fine_scale,
        latent_predicted * self._latent_scale])
    super().__init__(inputs=codes, outputs=predicted, **kwargs)
    self._remember(time_steps=time_steps, fine_shape=fine_shape, latent_shape=latent_shape,
                   head_steps=head_steps, leaky_relu_slope=leaky_relu_slope,
                   weight_decay=weight_decay, num_blocks=num_blocks,
                   bottleneck_channels=bottleneck_channels, sync_batchnorm=sync_batchnorm)

  def code_of(self, features):
    fine = keras.ops.space_to_depth(keras.ops.cast(features[0], "float32"), self._factor)
    latent = keras.ops.cast(features[-1], "float32")
    return keras.ops.concatenate([fine * self._fine_scale, latent * self._latent_scale],
                                 axis=-1)

  @property
  def code_shape(self):
    return self.latent_shape[:2] + (self._fine_channels + self.latent_shape[-1],)

  def predicted_latent_of(self, predicted):
    return predicted[..., self._fine_channels:] / self._latent_scale

  @classmethod
  def from_model_config(cls, model_cfg, time_steps: int, feature_shapes: Sequence[Sequence[int]],
                        sync_batchnorm: bool = False, name: str = "motion") -> "TwoLevelMotion":
    """The motion model of a config.ModelConfig; `--motion_head_steps=0` means k - 2."""
    return cls(time_steps=time_steps, fine_shape=feature_shapes[0],
               latent_shape=feature_shapes[-1],
               head_steps=model_cfg.motion_head_steps or time_steps - 2,
               leaky_relu_slope=model_cfg.leaky_relu_slope, weight_decay=model_cfg.weight_decay,
               bottleneck_channels=model_cfg.motion_bottleneck, sync_batchnorm=sync_batchnorm,
               name=name)
