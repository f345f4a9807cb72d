"""Building blocks shared by the appearance encoder and decoder."""

import keras

# The constructor arguments the appearance encoder and decoder share.
UNET_ARGS = ("image_size", "channels", "levels", "feature_root", "max_channels",
             "leaky_relu_slope", "weight_decay", "sync_batchnorm")


def level_channels(level: int, feature_root: int, max_channels: int) -> int:
  """Channels of U-Net level `level`: feature_root * 2^level, capped (the paper: 64 -> 512)."""
  return min(feature_root * 2**level, max_channels)


def batch_norm(name: str, synchronized: bool = False):
  """BatchNorm; `synchronized` uses the global batch's statistics under a tf.distribute
  strategy (otherwise each replica normalises with its own share of the batch)."""
  return keras.layers.BatchNormalization(synchronized=synchronized, name=name)


def conv_bn_relu(x, filters: int, leaky_relu_slope: float, weight_decay: float, name: str,
                 sync_batchnorm: bool = False):
  """Two [Conv 3x3 -> BatchNorm -> LeakyReLU] units, the block of every U-Net level."""
  for unit in (1, 2):
    x = keras.layers.Conv2D(
        filters, 3, padding="same", use_bias=False,
        kernel_regularizer=keras.regularizers.L2(weight_decay) if weight_decay else None,
        name=f"{name}_conv{unit}")(x)
    x = batch_norm(f"{name}_bn{unit}", sync_batchnorm)(x)
    x = keras.layers.LeakyReLU(negative_slope=leaky_relu_slope, name=f"{name}_relu{unit}")(x)
  return x


class ArgsConfig:
  """get_config / from_config for a Keras model whose constructor takes plain arguments.

  A class lists its constructor arguments in `CONFIG_ARGS` and stores each as an attribute of
  the same name (`_remember`); its config is then those attributes plus name and trainable, and
  `from_config` calls the constructor with them. Put it before keras.Model in the bases.
  """

  CONFIG_ARGS = ()

  def _remember(self, **args) -> None:
    for name, value in args.items():
      setattr(self, name, value)

  def get_config(self):
    config = {"name": self.name, "trainable": self.trainable}
    config.update({name: getattr(self, name) for name in self.CONFIG_ARGS})
    return config

  @classmethod
  def from_config(cls, config):
    return cls(**config)


class LatentCodeInputs:
  """What a motion model reads of each frame, and how its prediction maps back to a code.

  The default, for models that read the latent code alone: DAML, the evaluation, the streaming
  runtimes and the exports turn a frame's encoder features (one tensor per U-Net level, the
  latent code last) into the motion model's per-frame input with `code_of`, keep those inputs
  (of shape `code_shape`) as the frame's cached code, and decode a predicted frame from
  `predicted_latent_of(prediction)`. A motion model that reads other levels too
  (TwoLevelMotion) overrides all three. Put it before keras.Model in the bases; the class must
  set `latent_shape`.
  """

  def code_of(self, features):
    """The code the motion model reads of frames: [N, *code_shape] from their features."""
    return features[-1]

  @property
  def code_shape(self):
    return tuple(self.latent_shape)

  def predicted_latent_of(self, predicted):
    """The latent code a prediction holds for the decoder (the first head's, when several
    heads are stacked on channels)."""
    return predicted[..., :self.latent_shape[-1]]
