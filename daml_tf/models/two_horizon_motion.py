"""Two-horizon motion model: two Conv3D motion models predict the same future code, one from the
newest codes and one from codes further back."""

from typing import Sequence

import keras

from daml_tf.models import blocks
from daml_tf.models.motion import MotionModel


@keras.saving.register_keras_serializable(package="daml_tf")
class TwoHorizonMotion(blocks.LatentCodeInputs, blocks.ArgsConfig, keras.Model):
  """Two MotionModel heads on the same k codes; their predictions stacked on channels.

  The near head sees the newest `head_steps` codes and predicts the target `delta` frames after
  the last of them, as the paper's model does; the far head sees the oldest `head_steps` codes,
  so the same target lies `(time_steps - head_steps) * interval` frames further ahead of its
  inputs. With Ped2's geometry (inputs 2 frames apart, delta 4) and k = 6, head_steps = 4, the
  horizons are 4 and 8 frames. Each head is compared with the target code and their squared
  errors add up, in the latent loss and in every score (daml_tf.models.scores.heads_of): an
  ensemble of two horizons on the same cached codes, for the cost of a second motion model per
  frame and no second encoder.

  Why: on frozen codes of 13 Ped2 runs, the paper's horizon (4 frames) and a longer one (8)
  each miss what the other sees; the sum of their errors beat the single horizon on both the
  per-video and the pooled raw AUC, and by more than two seeds at one horizon
  (experiments/ped2_accuracy/horizon_ablation.py, experiments/ped2_accuracy/README.md).

  Args:
    time_steps: k, the number of past codes the model takes (> head_steps).
    latent_shape: (h, w, c) of one code.
    head_steps: codes per head (the paper's k).
    leaky_relu_slope, weight_decay, num_blocks, bottleneck_channels, sync_batchnorm: as
      MotionModel's, for both heads.

  Example:
  >>> motion = TwoHorizonMotion(time_steps=6, latent_shape=(16, 24, 32), head_steps=4)
  >>> tuple(motion(np.zeros((2, 6, 16, 24, 32), "float32")).shape)
  (2, 16, 24, 64)
  """

  CONFIG_ARGS = ("time_steps", "latent_shape", "head_steps", "leaky_relu_slope", "weight_decay",
                 "num_blocks", "bottleneck_channels", "sync_batchnorm")

  def __init__(self, time_steps: int, latent_shape: Sequence[int], head_steps: int,
               leaky_relu_slope: float = 0.2, weight_decay: float = 0.001,
               num_blocks: int = 3, bottleneck_channels: int = 0, sync_batchnorm: bool = False,
               **kwargs):
    if not 2 <= head_steps < time_steps:
      raise ValueError(f"head_steps must be in [2, time_steps), got {head_steps} with "
                       f"time_steps {time_steps}.")
    latent_shape = tuple(int(d) for d in latent_shape)
    head_args = dict(time_steps=head_steps, latent_shape=latent_shape,
                     leaky_relu_slope=leaky_relu_slope, weight_decay=weight_decay,
                     num_blocks=num_blocks, bottleneck_channels=bottleneck_channels,
                     sync_batchnorm=sync_batchnorm)
    codes = keras.Input((time_steps,) + latent_shape, name="past_latents")
    near = MotionModel(name="near_head", **head_args)(codes[:, time_steps - head_steps:])
    far = MotionModel(name="far_head", **head_args)(codes[:, :head_steps])
    predicted = keras.layers.Concatenate(axis=-1, dtype="float32", name="heads")([near, far])
    super().__init__(inputs=codes, outputs=predicted, **kwargs)
    self._remember(time_steps=time_steps, latent_shape=latent_shape, head_steps=head_steps,
                   leaky_relu_slope=leaky_relu_slope, weight_decay=weight_decay,
                   num_blocks=num_blocks, bottleneck_channels=bottleneck_channels,
                   sync_batchnorm=sync_batchnorm)

  @classmethod
  def from_model_config(cls, model_cfg, time_steps: int,
                        feature_shapes: Sequence[Sequence[int]],
                        sync_batchnorm: bool = False,
                        name: str = "motion") -> "TwoHorizonMotion":
    """The motion model of a config.ModelConfig; `--motion_head_steps=0` means k - 2."""
    return cls(time_steps=time_steps, latent_shape=feature_shapes[-1],
               head_steps=model_cfg.motion_head_steps or time_steps - 2,
               leaky_relu_slope=model_cfg.leaky_relu_slope, weight_decay=model_cfg.weight_decay,
               bottleneck_channels=model_cfg.motion_bottleneck, sync_batchnorm=sync_batchnorm,
               name=name)
