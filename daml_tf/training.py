"""Two-phase DAML training: a custom distributed loop around `DAML.train_step`.

The loop is ours rather than `Model.fit` so that it can (1) time how long each step waits for
input, (2) checkpoint phase and epoch together with the weights and optimizer, and (3) run the
same per-replica step under any tf.distribute strategy, including the multi-worker one where
Keras 3's fit does not work on TF 2.16.
"""

import dataclasses
import math
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from daml_tf import config as config_lib
from daml_tf import export as export_lib
from daml_tf.data import layout
from daml_tf.data import pipeline
from daml_tf.data import registry
from daml_tf.models import DAML

CONFIG_FILE = "config.json"
CHECKPOINT_SUBDIR = "checkpoints"
EXPORT_SUBDIR = "export"
SUMMARY_SUBDIR = "train"


class TrainingError(RuntimeError):
  """Training cannot go on (for example a non-finite loss); the message says where."""


@dataclasses.dataclass(frozen=True)
class Phase:
  name: str
  epochs: int
  lambda_r: float
  lambda_p: float


def phases(train_cfg: config_lib.TrainConfig) -> List[Phase]:
  return [
      Phase("train", train_cfg.train_epochs, train_cfg.train_lambda_r, train_cfg.train_lambda_p),
      Phase("finetune", train_cfg.finetune_epochs, train_cfg.finetune_lambda_r,
            train_cfg.finetune_lambda_p),
  ]


def learning_rate_for_epoch(train_cfg: config_lib.TrainConfig, epoch_in_phase: int) -> float:
  """Step decay, restarted at each phase: lr * factor^(epoch // decay_epochs)."""
  if not train_cfg.lr_decay_epochs:
    return train_cfg.learning_rate
  return train_cfg.learning_rate * train_cfg.lr_decay_factor**(
      epoch_in_phase // train_cfg.lr_decay_epochs)


def make_strategy(name: str) -> tf.distribute.Strategy:
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  return tf.distribute.get_strategy()


def build_model(cfg: config_lib.Config) -> DAML:
  """The DAML model of a config (under the current dtype policy and strategy scope)."""
  return DAML(
      image_size=cfg.data.image_size, channels=cfg.data.channels,
      time_steps=cfg.data.time_steps, levels=cfg.model.levels,
      feature_root=cfg.model.feature_root, max_channels=cfg.model.max_channels,
      leaky_relu_slope=cfg.model.leaky_relu_slope, weight_decay=cfg.model.weight_decay,
      latent_loss_trains_encoder=cfg.model.latent_loss_trains_encoder,
      motion_bottleneck=cfg.model.motion_bottleneck)


def compile_model(model: DAML, train_cfg: config_lib.TrainConfig) -> None:
  model.compile(optimizer=keras.optimizers.Adam(
      learning_rate=train_cfg.learning_rate, epsilon=train_cfg.adam_epsilon))
  # Creating the slots now (not lazily inside the first replica step) lets a checkpoint restore
  # the optimizer state immediately.
  model.optimizer.build(model.trainable_variables)


def epoch_schedule(train_cfg: config_lib.TrainConfig) -> List[Tuple[Phase, int]]:
  """(phase, epoch within the phase) of every epoch of the run, in order.

  A checkpoint stores how many of these are done, so a resumed run continues at the right
  phase and epoch, and a run given more epochs of its last phase trains just those.
  """
  return [(phase, epoch) for phase in phases(train_cfg) for epoch in range(phase.epochs)]


def make_checkpoint(model: DAML, epochs_done: tf.Variable) -> tf.train.Checkpoint:
  return tf.train.Checkpoint(model=model, optimizer=model.optimizer, epochs_done=epochs_done)


def check_resume_compatible(cfg: config_lib.Config, model_dir: str) -> None:
  """Refuses to resume from a model directory trained with another architecture or geometry."""
  path = os.path.join(model_dir, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    return
  saved = config_lib.load_config(path)
  geometry = ("image_height", "image_width", "channels", "time_steps")
  differences = [
      f"{name}: saved {getattr(saved.data, name)} vs now {getattr(cfg.data, name)}"
      for name in geometry if getattr(saved.data, name) != getattr(cfg.data, name)
  ] + [
      f"{field.name}: saved {getattr(saved.model, field.name)} vs now "
      f"{getattr(cfg.model, field.name)}"
      for field in dataclasses.fields(cfg.model)
      if getattr(saved.model, field.name) != getattr(cfg.model, field.name)
  ]
  if differences:
    raise config_lib.ConfigError(
        f"{model_dir} holds a model with another configuration ({'; '.join(differences)}). "
        "Use a new --model_dir or the original flags.")


def prepare_training_data(cfg: config_lib.Config):
  """Lists and validates the training videos; loads or computes the background.

  Every check that can fail on bad data runs here, before the model is built.
  """
  spec = registry.get_spec(cfg.data.dataset)
  root = layout.resolve_dataset_root(cfg.data.data_dir, spec)
  videos = layout.list_videos(root, "training", spec)
  layout.check_clip_length(videos, cfg.data.clip_span)
  tf.io.gfile.makedirs(cfg.train.model_dir)
  background = pipeline.load_or_compute_background(
      cfg.train.model_dir, videos, cfg.data.image_size, cfg.data.channels)
  return videos, background


class _Summaries:
  """TensorBoard scalars and images, written by the chief only."""

  def __init__(self, logdir: str, train_cfg: config_lib.TrainConfig):
    self._writer = tf.summary.create_file_writer(logdir)
    self._cfg = train_cfg

  def step(self, step: int, values: Dict[str, float]) -> None:
    if step % self._cfg.log_every_steps:
      return
    with self._writer.as_default(step=step):
      for name, value in values.items():
        tf.summary.scalar(f"step/{name}", value)

  def epoch(self, step: int, values: Dict[str, float]) -> None:
    with self._writer.as_default(step=step):
      for name, value in values.items():
        tf.summary.scalar(f"epoch/{name}", value)
    self._writer.flush()

  def images(self, step: int, model: DAML, clip) -> None:
    if not self._cfg.image_summary_steps or step % self._cfg.image_summary_steps:
      return
    rendered = model.render(clip[:1])
    with self._writer.as_default(step=step):
      for name, frames in rendered.items():
        # One row of the clip's frames side by side, clipped to the displayable range.
        frames = tf.clip_by_value(frames, 0.0, 1.0)
        if frames.shape.rank == 5:
          frames = tf.concat(tf.unstack(frames[0], axis=0), axis=1)[tf.newaxis]
        tf.summary.image(name, frames)

  def close(self) -> None:
    self._writer.close()


class _Progress:
  """A redrawn progress bar on a terminal; in a log file, a line every tenth of the epoch."""

  def __init__(self, steps: int):
    self._steps = steps
    self._bar = keras.utils.Progbar(steps, stateful_metrics=["clips/s", "lr"]) if (
        sys.stdout.isatty()) else None
    self._log_every = max(1, steps // 10)

  def update(self, step: int, values: Dict[str, float], clips_per_second: float) -> None:
    shown = [("loss", values["total_loss"]), ("recon", values["recon_loss"]),
             ("latent", values["latent_loss"]), ("clips/s", clips_per_second),
             ("lr", values["learning_rate"])]
    if self._bar is not None:
      self._bar.update(step, shown)
    elif step % self._log_every == 0 or step == self._steps:
      logging.info("step %d/%d: %s", step, self._steps,
                   " ".join(f"{name} {value:.4g}" for name, value in shown))


def train(cfg: config_lib.Config) -> Dict[str, float]:
  """Trains (or resumes) both phases, then exports the scorer.

  Returns:
    The last epoch's mean losses, plus `input_wait_fraction` and the global step.
  """
  keras.mixed_precision.set_global_policy(cfg.train.mixed_precision)
  keras.utils.set_random_seed(cfg.data.seed)
  check_resume_compatible(cfg, cfg.train.model_dir)
  videos, background = prepare_training_data(cfg)
  config_lib.save_config(cfg, os.path.join(cfg.train.model_dir, CONFIG_FILE))

  strategy = make_strategy(cfg.train.strategy)
  clip_data = pipeline.training_dataset(videos, background, cfg.data, training=True)
  steps_per_epoch = clip_data.steps_per_epoch(cfg.data.clips_per_epoch)
  logging.info("%d training videos, %d clips; %d steps of %d clips per epoch; %s on %d replica(s)",
               len(videos), clip_data.num_clips, steps_per_epoch, cfg.data.batch_size,
               cfg.train.strategy, strategy.num_replicas_in_sync)

  with strategy.scope():
    model = build_model(cfg)
    model.set_background(background)
    compile_model(model, cfg.train)
    epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
  checkpoint = make_checkpoint(model, epochs_done)
  manager = tf.train.CheckpointManager(
      checkpoint, os.path.join(cfg.train.model_dir, CHECKPOINT_SUBDIR), max_to_keep=3)
  if manager.latest_checkpoint:
    checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    logging.info("Resuming from %s: %d epoch(s) done, step %d", manager.latest_checkpoint,
                 int(epochs_done.numpy()), int(model.optimizer.iterations.numpy()))
  # The background is data, not a learned weight: the one just computed or loaded wins.
  model.set_background(background)

  @tf.function
  def distributed_step(batch):
    per_replica = strategy.run(model.train_step, args=(batch,))
    return {
        name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
        for name, value in per_replica.items()
    }

  iterator = iter(strategy.experimental_distribute_dataset(clip_data.dataset))
  schedule = epoch_schedule(cfg.train)
  summaries = _Summaries(os.path.join(cfg.train.model_dir, SUMMARY_SUBDIR), cfg.train)
  last_epoch_values: Dict[str, float] = {}
  try:
    while int(epochs_done.numpy()) < len(schedule):
      phase, epoch = schedule[int(epochs_done.numpy())]
      model.set_phase_weights(phase.lambda_r, phase.lambda_p)
      learning_rate = learning_rate_for_epoch(cfg.train, epoch)
      model.optimizer.learning_rate = learning_rate
      logging.info("Phase %s, epoch %d/%d, lr %.3g", phase.name, epoch + 1, phase.epochs,
                   learning_rate)
      last_epoch_values = _run_epoch(model, distributed_step, iterator, steps_per_epoch, cfg,
                                     summaries, phase, epoch, strategy)
      epochs_done.assign_add(1)
      logging.info("Saved checkpoint %s",
                   manager.save(checkpoint_number=model.optimizer.iterations))
  finally:
    summaries.close()

  if cfg.train.export:
    export_dir = os.path.join(cfg.train.model_dir, EXPORT_SUBDIR)
    export_lib.export_scorer(model, export_dir)
    logging.info("Exported the scorer SavedModel to %s", export_dir)
  return dict(last_epoch_values, global_step=int(model.optimizer.iterations.numpy()))


def _run_epoch(model, distributed_step, iterator, steps, cfg, summaries, phase, epoch,
               strategy) -> Dict[str, float]:
  model.reset_metrics()
  progress = _Progress(steps)
  wait_seconds = 0.0
  epoch_start = time.perf_counter()
  for step_in_epoch in range(steps):
    step_start = time.perf_counter()
    batch = next(iterator)
    fetched = time.perf_counter()
    outputs = distributed_step(batch)
    values = {name: float(value.numpy()) for name, value in outputs.items()}
    done = time.perf_counter()
    wait_seconds += fetched - step_start
    global_step = int(model.optimizer.iterations.numpy())
    if not math.isfinite(values["total_loss"]):
      raise TrainingError(
          f"Non-finite loss at step {global_step} (phase {phase.name}, epoch {epoch + 1}, "
          f"batch {step_in_epoch + 1}): {values}. Training stopped; the last good checkpoint "
          f"in {os.path.join(cfg.train.model_dir, CHECKPOINT_SUBDIR)} is kept.")
    summaries.step(global_step, values)
    summaries.images(global_step, model, strategy.experimental_local_results(batch)[0])
    progress.update(step_in_epoch + 1, values,
                    cfg.data.batch_size / max(done - step_start, 1e-9))
  elapsed = time.perf_counter() - epoch_start
  epoch_values = {name: float(tracker.result()) for name, tracker in model.loss_trackers.items()}
  epoch_values["learning_rate"] = values["learning_rate"]
  epoch_values["input_wait_fraction"] = wait_seconds / max(elapsed, 1e-9)
  epoch_values["clips_per_second"] = steps * cfg.data.batch_size / max(elapsed, 1e-9)
  summaries.epoch(int(model.optimizer.iterations.numpy()), epoch_values)
  logging.info(
      "Phase %s epoch %d: total %.4g recon %.4g latent %.4g reg %.4g; %.1f clips/s; "
      "%.1f%% of step time waiting for input", phase.name, epoch + 1,
      epoch_values["total_loss"], epoch_values["recon_loss"], epoch_values["latent_loss"],
      epoch_values["reg_loss"], epoch_values["clips_per_second"],
      100 * epoch_values["input_wait_fraction"])
  return epoch_values


def restore_model(cfg: config_lib.Config, model_dir: Optional[str] = None) -> DAML:
  """Builds the model of `cfg` and restores the newest checkpoint of `model_dir`."""
  model_dir = model_dir or cfg.train.model_dir
  check_resume_compatible(cfg, model_dir)
  # Scoring always runs in float32, whatever policy the model was trained under.
  keras.mixed_precision.set_global_policy("float32")
  model = build_model(cfg)
  latest = tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_SUBDIR))
  if not latest:
    raise FileNotFoundError(
        f"No checkpoint in {os.path.join(model_dir, CHECKPOINT_SUBDIR)}: train first with "
        f"python -m daml_tf.train --model_dir={model_dir} ...")
  tf.train.Checkpoint(model=model).restore(latest).expect_partial()
  logging.info("Restored %s", latest)
  return model
