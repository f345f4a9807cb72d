"""Motion model: predicts a future latent code from k past codes."""

from typing import Sequence

import keras

from daml_tf.models import blocks


@keras.saving.register_keras_serializable(package="daml_tf")
class MotionModel(blocks.LatentCodeInputs, blocks.ArgsConfig, keras.Model):
  """Three [Conv3D 3x3x3 stride (2,1,1) -> BatchNorm -> LeakyReLU] blocks over time.

  The latent codes z1..zk are stacked on a time axis; each block halves the time axis (padding
  "same" rounds up), and the mean over what is left of it is the predicted code. Works for any
  k >= 2.

  With `bottleneck_channels` set (and smaller than the code's c), a 1x1x1 Conv3D first reduces
  the codes to that many channels, the blocks run at that width, and a 1x1 Conv2D maps the
  result back to c channels. The blocks' multiply-adds scale with the square of their width, so
  at the paper's size (c = 512) a bottleneck of 128 cuts the motion model's cost about 12x; this
  departs from the paper, which keeps c filters throughout.

  Args:
    time_steps: k, the number of past codes.
    latent_shape: (h, w, c) of one code; the Conv3D blocks keep c filters.
    leaky_relu_slope: negative slope of the LeakyReLUs.
    weight_decay: gamma of the L2 kernel regulariser.
    num_blocks: Conv3D blocks (the paper: 3).
    bottleneck_channels: width of the blocks; 0 (the paper) keeps the code's channels.
    sync_batchnorm: synchronise BatchNorm statistics across replicas.

  Example:
  >>> motion = MotionModel(time_steps=4, latent_shape=(16, 24, 32))
  >>> tuple(motion(np.zeros((2, 4, 16, 24, 32), "float32")).shape)
  (2, 16, 24, 32)
  """

  CONFIG_ARGS = ("time_steps", "latent_shape", "leaky_relu_slope", "weight_decay", "num_blocks",
                 "bottleneck_channels", "sync_batchnorm")

  def __init__(self, time_steps: int, latent_shape: Sequence[int],
               leaky_relu_slope: float = 0.2, weight_decay: float = 0.001,
               num_blocks: int = 3, bottleneck_channels: int = 0, sync_batchnorm: bool = False,
               **kwargs):
    latent_shape = tuple(int(d) for d in latent_shape)
    code_channels = latent_shape[-1]
    reduced = 0 < bottleneck_channels < code_channels
    width = bottleneck_channels if reduced else code_channels
    regularizer = lambda: keras.regularizers.L2(weight_decay) if weight_decay else None
    codes = keras.Input((time_steps,) + latent_shape, name="past_latents")
    x = codes
    if reduced:
      x = keras.layers.Conv3D(width, 1, use_bias=False, kernel_regularizer=regularizer(),
                              name="motion_reduce_conv")(x)
      x = blocks.batch_norm("motion_reduce_bn", sync_batchnorm)(x)
      x = keras.layers.LeakyReLU(negative_slope=leaky_relu_slope, name="motion_reduce_relu")(x)
    for block in range(num_blocks):
      x = keras.layers.Conv3D(
          width, 3, strides=(2, 1, 1), padding="same", use_bias=False,
          kernel_regularizer=regularizer(), name=f"motion{block}_conv")(x)
      x = blocks.batch_norm(f"motion{block}_bn", sync_batchnorm)(x)
      x = keras.layers.LeakyReLU(negative_slope=leaky_relu_slope, name=f"motion{block}_relu")(x)
    # Cast before the mean so the latent loss and the score are computed in float32.
    x = keras.layers.Activation("linear", dtype="float32", name="to_float32")(x)
    predicted = keras.ops.mean(x, axis=1)
    if reduced:
      # Linear, so the prediction can take every value a code takes; float32 like the rest of
      # the scoring path.
      predicted = keras.layers.Conv2D(code_channels, 1, kernel_regularizer=regularizer(),
                                      dtype="float32", name="motion_expand_conv")(predicted)
    super().__init__(inputs=codes, outputs=predicted, **kwargs)
    self._remember(time_steps=time_steps, latent_shape=latent_shape,
                   leaky_relu_slope=leaky_relu_slope, weight_decay=weight_decay,
                   num_blocks=num_blocks, bottleneck_channels=bottleneck_channels,
                   sync_batchnorm=sync_batchnorm)

  @classmethod
  def from_model_config(cls, model_cfg, time_steps: int,
                        feature_shapes: Sequence[Sequence[int]],
                        sync_batchnorm: bool = False, name: str = "motion") -> "MotionModel":
    """The motion model of a config.ModelConfig (see daml_tf.models.build.MOTION_MODELS)."""
    return cls(time_steps=time_steps, latent_shape=feature_shapes[-1],
               leaky_relu_slope=model_cfg.leaky_relu_slope, weight_decay=model_cfg.weight_decay,
               bottleneck_channels=model_cfg.motion_bottleneck, sync_batchnorm=sync_batchnorm,
               name=name)
