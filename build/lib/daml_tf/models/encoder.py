"""Appearance encoder: the contracting half of the DAML U-Net."""

from typing import Sequence

import keras

from daml_tf.models import blocks


@keras.saving.register_keras_serializable(package="daml_tf")
class AppearanceEncoder(blocks.ArgsConfig, keras.Model):
  """Encodes one frame into the features of every U-Net level.

  Level i is two [Conv 3x3 -> BatchNorm -> LeakyReLU] units with
  `min(feature_root * 2^i, max_channels)` channels; a 2x2 max-pool sits between levels and none
  follows the last, whose output is the frame's latent code z. The outputs of the other levels
  are the skip features the decoder of the *next* frame consumes.

  Args:
    image_size: (height, width) of the input; both divisible by 2^(levels-1).
    channels: input channels (1 or 3).
    levels: number of levels.
    feature_root: channels of level 0.
    max_channels: channel cap.
    leaky_relu_slope: negative slope of the LeakyReLUs.
    weight_decay: gamma of the L2 kernel regulariser.
    sync_batchnorm: synchronise BatchNorm statistics across replicas.

  Example:
  >>> encoder = AppearanceEncoder(image_size=(64, 96), channels=1, levels=3, feature_root=8)
  >>> features = encoder(np.zeros((2, 64, 96, 1), "float32"))
  >>> [tuple(f.shape) for f in features]
  [(2, 64, 96, 8), (2, 32, 48, 16), (2, 16, 24, 32)]
  """

  CONFIG_ARGS = blocks.UNET_ARGS

  def __init__(self, image_size: Sequence[int], channels: int, levels: int = 4,
               feature_root: int = 64, max_channels: int = 512,
               leaky_relu_slope: float = 0.2, weight_decay: float = 0.001,
               sync_batchnorm: bool = False, **kwargs):
    height, width = image_size
    factor = 2**(levels - 1)
    if height % factor or width % factor:
      raise ValueError(
          f"image size {height}x{width} must be divisible by 2^(levels-1) = {factor} "
          f"for {levels} levels.")
    frames = keras.Input((height, width, channels), name="frame")
    x = frames
    features = []
    for level in range(levels):
      if level:
        x = keras.layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
      x = blocks.conv_bn_relu(
          x, blocks.level_channels(level, feature_root, max_channels), leaky_relu_slope,
          weight_decay, name=f"enc{level}", sync_batchnorm=sync_batchnorm)
      features.append(x)
    super().__init__(inputs=frames, outputs=features, **kwargs)
    self._remember(image_size=(int(height), int(width)), channels=channels, levels=levels,
                   feature_root=feature_root, max_channels=max_channels,
                   leaky_relu_slope=leaky_relu_slope, weight_decay=weight_decay,
                   sync_batchnorm=sync_batchnorm)

  @property
  def feature_shapes(self):
    """(h, w, c) of every level's features, the latent code's last."""
    return [tuple(output.shape[1:]) for output in self.outputs]

  @property
  def latent_shape(self):
    """(h, w, c) of the latent code z."""
    return tuple(self.outputs[-1].shape[1:])
