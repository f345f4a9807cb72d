"""A tiny checkpointed DAML run and synthetic camera frames, shared by the export tests.

The model is untrained (random weights, BatchNorm statistics moved away from (0, 1) so no layer
is an identity): export numerics do not depend on training, and building it takes a second.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from daml_tf import config as config_lib
from daml_tf import streaming
from daml_tf import training

HEIGHT, WIDTH = 32, 48
CAMERA = (45, 70)  # Not the model size and not a multiple of it: the graph must resize.
K = 3
LATENT = (16, 24, 8)  # levels=2, feature_root=4 on 32x48.


def tiny_config(model_dir):
  return config_lib.Config(
      data=config_lib.DataConfig(
          dataset="synthetic", image_height=HEIGHT, image_width=WIDTH, channels=1,
          time_steps=K, interval=2, delta=1),
      model=config_lib.ModelConfig(levels=2, feature_root=4),
      train=config_lib.TrainConfig(model_dir=str(model_dir)))


def make_run(model_dir, threshold, seed=0):
  """A run directory (config.json, one checkpoint, threshold.json) and its model."""
  cfg = tiny_config(model_dir)
  keras.utils.set_random_seed(seed)
  model = training.build_model(cfg)
  rng = np.random.default_rng(seed)
  model.set_background(rng.uniform(0.2, 0.6, (HEIGHT, WIDTH, 1)).astype("float32"))
  for weight in model.weights:
    if weight.path.endswith("moving_mean"):
      weight.assign(rng.normal(0, 0.1, weight.shape).astype("float32"))
    elif weight.path.endswith("moving_variance"):
      weight.assign(rng.uniform(0.5, 2.0, weight.shape).astype("float32"))
  config_lib.save_config(cfg, os.path.join(model_dir, training.CONFIG_FILE))
  tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                             os.path.join(model_dir, training.CHECKPOINT_SUBDIR), 1).save()
  streaming.save_threshold(str(model_dir), threshold["threshold"], threshold["quantile"])
  return cfg, model


def camera_frames(num_frames, channels, size=CAMERA, seed=0):
  """uint8 [N, H, W, C]: a smooth scene with a moving bright square, plus noise."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size[0], 0:size[1]]
  frames = []
  for t in range(num_frames):
    image = 100 + 50 * np.sin(xx / 6.0 + t / 4) + 30 * np.cos(yy / 5.0)
    image[10:20, 5 + 3 * t:15 + 3 * t] = 240
    layers = [image, np.roll(image, 4, axis=1), 255 - image, np.full_like(image, 200)]
    frame = np.stack(layers[:channels] if channels != 2 else [image, layers[3]], axis=-1)
    frames.append(np.clip(frame + rng.normal(0, 4, frame.shape), 0, 255).astype(np.uint8))
  return np.stack(frames)
