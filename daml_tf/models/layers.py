"""Building blocks shared by the appearance encoder and decoder."""

import keras


def level_channels(level: int, feature_root: int, max_channels: int) -> int:
  """Channels of U-Net level `level`: feature_root * 2^level, capped (the paper: 64 -> 512)."""
  return min(feature_root * 2**level, max_channels)


def conv_bn_relu(x, filters: int, leaky_relu_slope: float, weight_decay: float, name: str):
  """Two [Conv 3x3 -> BatchNorm -> LeakyReLU] units, the block of every U-Net level."""
  for unit in (1, 2):
    x = keras.layers.Conv2D(
        filters, 3, padding="same", use_bias=False,
        kernel_regularizer=keras.regularizers.L2(weight_decay) if weight_decay else None,
        name=f"{name}_conv{unit}")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn{unit}")(x)
    x = keras.layers.LeakyReLU(negative_slope=leaky_relu_slope, name=f"{name}_relu{unit}")(x)
  return x
