"""Appearance decoder: the expanding half of the DAML U-Net, fed by the previous frame."""

from typing import Sequence

import keras

from daml_tf.models import blocks


@keras.saving.register_keras_serializable(package="daml_tf")
class AppearanceDecoder(blocks.ArgsConfig, keras.Model):
  """Reconstructs frame T(k) from its latent code and the skip features of frame T(k-1).

  The skips come from the *previous* frame (the paper's previous-frame shortcut): the decoder
  cannot copy T(k)'s details through the skips, so T(k)'s latent code must carry what changed.
  Per level, from the deepest up: Conv2DTranspose 2x2 stride 2, concatenation with the previous
  frame's encoder features of that level, two [Conv 3x3 -> BN -> LeakyReLU] units; then a linear
  Conv 3x3 to `channels`. The output is background-subtracted, like the input frames.

  Inputs: a list `[z, skip_0, ..., skip_{levels-2}]` where skip_i is level i's encoder output for
  the previous frame.

  Args:
    image_size: (height, width) of the frames.
    channels: output channels.
    levels, feature_root, max_channels: as the encoder's.
    leaky_relu_slope: negative slope of the LeakyReLUs.
    weight_decay: gamma of the L2 kernel regulariser.
    sync_batchnorm: synchronise BatchNorm statistics across replicas.

  Example:
  >>> decoder = AppearanceDecoder(image_size=(64, 96), channels=1, levels=3, feature_root=8)
  >>> z, skips = np.zeros((2, 16, 24, 32)), [np.zeros((2, 64, 96, 8)), np.zeros((2, 32, 48, 16))]
  >>> tuple(decoder([z] + skips).shape)
  (2, 64, 96, 1)
  """

  CONFIG_ARGS = blocks.UNET_ARGS

  def __init__(self, image_size: Sequence[int], channels: int, levels: int = 4,
               feature_root: int = 64, max_channels: int = 512,
               leaky_relu_slope: float = 0.2, weight_decay: float = 0.001,
               sync_batchnorm: bool = False, **kwargs):
    height, width = image_size
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    level_shapes = [
        (height // 2**level, width // 2**level,
         blocks.level_channels(level, feature_root, max_channels))
        for level in range(levels)
    ]
    latent = keras.Input(level_shapes[-1], name="latent")
    skips = [
        keras.Input(level_shapes[level], name=f"previous_skip{level}")
        for level in range(levels - 1)
    ]
    x = latent
    for level in reversed(range(levels - 1)):
      filters = level_shapes[level][-1]
      x = keras.layers.Conv2DTranspose(
          filters, 2, strides=2, kernel_regularizer=regularizer, name=f"dec{level}_up")(x)
      x = keras.layers.Concatenate(name=f"dec{level}_concat")([x, skips[level]])
      x = blocks.conv_bn_relu(x, filters, leaky_relu_slope, weight_decay, name=f"dec{level}",
                              sync_batchnorm=sync_batchnorm)
    # float32 output so the pixel loss is computed in full precision under mixed policies.
    frame = keras.layers.Conv2D(
        channels, 3, padding="same", kernel_regularizer=regularizer, dtype="float32",
        name="dec_out")(x)
    super().__init__(inputs=[latent] + skips, outputs=frame, **kwargs)
    self._remember(image_size=(int(height), int(width)), channels=channels, levels=levels,
                   feature_root=feature_root, max_channels=max_channels,
                   leaky_relu_slope=leaky_relu_slope, weight_decay=weight_decay,
                   sync_batchnorm=sync_batchnorm)
