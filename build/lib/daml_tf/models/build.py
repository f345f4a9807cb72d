"""Builds the DAML model of a config: the appearance U-Net, a registered motion model, DAML.

A new motion model is one new module with a Keras model class and one line in
`MOTION_MODELS`; `--motion=<name>` then selects it. The class must:
  - take k codes [B, k, *code_shape] and return the predicted code [B, *code_shape] in float32,
    or H predictions of it stacked on channels [B, h, w, H*c] (daml_tf.models.scores.heads_of);
  - say what a frame's code is: `blocks.LatentCodeInputs` in its bases (the latent code alone)
    or its own `code_of`, `code_shape` and `predicted_latent_of` (TwoLevelMotion);
  - have a `time_steps` attribute (k) and be registered with
    `keras.saving.register_keras_serializable` (DAML.get_config stores its config);
  - name its layers, so a rebuilt copy (float32_copy) has the same weight paths;
  - provide `from_model_config(model_cfg, time_steps, feature_shapes, sync_batchnorm, name)`,
    `feature_shapes` being the shape of every encoder level's features, the latent code last.
"""

import contextlib
from typing import Iterator, Sequence

import keras
import numpy as np

from daml_tf import config as config_lib
from daml_tf import errors
from daml_tf.models.daml import DAML
from daml_tf.models.decoder import AppearanceDecoder
from daml_tf.models.encoder import AppearanceEncoder
from daml_tf.models.motion import MotionModel
from daml_tf.models.two_horizon_motion import TwoHorizonMotion
from daml_tf.models.two_level_motion import TwoLevelMotion

# --motion name -> motion model class.
MOTION_MODELS = {
    "conv3d": MotionModel,
    "two_horizon": TwoHorizonMotion,
    "two_level": TwoLevelMotion,
}


def motion_class(name: str):
  """The registered motion model class of `name`; ConfigError naming the known ones."""
  if name not in MOTION_MODELS:
    raise errors.ConfigError(f"--motion must be one of {sorted(MOTION_MODELS)}, got {name!r}.")
  return MOTION_MODELS[name]


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
  """Makes `name` the global Keras dtype policy inside the block, then restores the old one.

  Layers take the global policy when they are built, so a model built inside keeps it.
  """
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)


def build_motion(model_cfg: config_lib.ModelConfig, time_steps: int,
                 feature_shapes: Sequence[Sequence[int]],
                 sync_batchnorm: bool = False) -> keras.Model:
  """The motion model named by `model_cfg.motion`, for an encoder of these level shapes."""
  return motion_class(model_cfg.motion).from_model_config(
      model_cfg, time_steps=time_steps,
      feature_shapes=[tuple(int(d) for d in shape) for shape in feature_shapes],
      sync_batchnorm=sync_batchnorm, name="motion")


def build_model(cfg: config_lib.Config) -> DAML:
  """The DAML model of a config (under the current dtype policy and strategy scope)."""
  model_cfg = cfg.model
  unet_args = dict(
      image_size=cfg.data.image_size, channels=cfg.data.channels, levels=model_cfg.levels,
      feature_root=model_cfg.feature_root, max_channels=model_cfg.max_channels,
      leaky_relu_slope=model_cfg.leaky_relu_slope, weight_decay=model_cfg.weight_decay,
      sync_batchnorm=cfg.train.sync_batchnorm)
  encoder = AppearanceEncoder(name="encoder", **unet_args)
  decoder = AppearanceDecoder(name="decoder", **unet_args)
  motion = build_motion(model_cfg, cfg.data.time_steps, encoder.feature_shapes,
                        cfg.train.sync_batchnorm)
  return DAML(encoder, decoder, motion,
              latent_loss_trains_encoder=model_cfg.latent_loss_trains_encoder)


def float32_model(cfg: config_lib.Config) -> DAML:
  """The config's model, untrained, in float32 whatever the global dtype policy."""
  with dtype_policy("float32"):
    return build_model(cfg)


def float32_copy(model: DAML) -> DAML:
  """A float32 DAML with the weights of `model` (of any dtype policy or strategy).

  Under a mixed-precision policy the encoder computes (and returns) float16; scoring and
  serving always run float32, so the model is rebuilt under the float32 policy from its
  config. Variables are float32 under every policy, so the copy is exact.
  """
  with dtype_policy("float32"):
    copy = DAML.from_config(model.get_config())
  if len(copy.weights) != len(model.weights):
    raise ValueError(f"Cannot copy {len(model.weights)} weights into a rebuilt model with "
                     f"{len(copy.weights)}.")
  for source, target in zip(model.weights, copy.weights):
    if source.path != target.path or tuple(source.shape) != tuple(target.shape):
      raise ValueError(f"Weight {source.path} {tuple(source.shape)} does not match the "
                       f"rebuilt model's {target.path} {tuple(target.shape)}.")
    target.assign(np.asarray(source.numpy(), np.float32))
  return copy
