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
from daml_tf import serving
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
  """The tf.distribute strategy of --strategy.

  "multi_worker" reads the cluster from the TF_CONFIG environment variable; like every
  collective-based strategy it must exist before TensorFlow runs any op, so `train` creates it
  first.
  """
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.get_strategy()


@dataclasses.dataclass(frozen=True)
class WorkerRole:
  """Which process of a (possibly multi-worker) run this is.

  Attributes:
    is_chief: the one process that writes checkpoints, summaries, the export and the
      threshold into the model directory.
    task: "<type>_<index>" (e.g. "worker_1"), naming the scratch folder of a non-chief.
  """

  is_chief: bool
  task: str


def worker_role(strategy: tf.distribute.Strategy) -> WorkerRole:
  """The chief is task "chief", or worker 0 when the cluster has no chief job."""
  resolver = strategy.cluster_resolver  # None for one-process strategies.
  task_type = getattr(resolver, "task_type", None)
  if resolver is None or task_type is None:
    return WorkerRole(is_chief=True, task="chief_0")
  task_id = int(resolver.task_id or 0)
  jobs = resolver.cluster_spec().as_dict()
  is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and
                                      "chief" not in jobs)
  return WorkerRole(is_chief=is_chief, task=f"{task_type}_{task_id}")


def scratch_dir(model_dir: str, role: WorkerRole) -> str:
  """Where a non-chief writes what the chief writes into model_dir (removed at the end).

  Every worker must take part in saving (a save may run collective ops), but only the chief's
  copy is kept.
  """
  return os.path.join(model_dir, "workers_scratch", role.task)


def build_model(cfg: config_lib.Config) -> DAML:
  """The DAML model of a config (under the current dtype policy and strategy scope)."""
  return DAML(
      image_size=cfg.data.image_size, channels=cfg.data.channels,
      time_steps=cfg.data.time_steps, levels=cfg.model.levels,
      feature_root=cfg.model.feature_root, max_channels=cfg.model.max_channels,
      leaky_relu_slope=cfg.model.leaky_relu_slope, weight_decay=cfg.model.weight_decay,
      latent_loss_trains_encoder=cfg.model.latent_loss_trains_encoder,
      motion_bottleneck=cfg.model.motion_bottleneck,
      sync_batchnorm=cfg.train.sync_batchnorm)


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


def make_checkpoint(model: DAML, epochs_done: tf.Variable,
                    epoch_steps_done: Optional[tf.Variable] = None) -> tf.train.Checkpoint:
  """Weights, optimizer state (with the global step) and the position in the schedule."""
  position = {} if epoch_steps_done is None else {"epoch_steps_done": epoch_steps_done}
  return tf.train.Checkpoint(model=model, optimizer=model.optimizer, epochs_done=epochs_done,
                             **position)


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


@dataclasses.dataclass(frozen=True)
class TrainingData:
  """What training reads, validated before the model is built.

  Attributes:
    videos: the frames-layout videos clips are cut from (empty when training from TFRecords).
    holdout_videos: the held-out tails of the training videos, for threshold calibration.
    background: float32 [H, W, C], the per-pixel mean of the training frames.
  """

  videos: Tuple[layout.Video, ...]
  holdout_videos: Tuple[layout.Video, ...]
  background: np.ndarray


def prepare_training_data(cfg: config_lib.Config, output_dir: str) -> TrainingData:
  """Lists and validates the training videos; loads or computes the background.

  Every check that can fail on bad data runs here, before the model is built.

  Args:
    cfg: the run's config.
    output_dir: where background.npy is cached (the model directory, or a non-chief worker's
      scratch folder).
  """
  from daml_tf import calibration  # Deferred: calibration imports this module.
  tf.io.gfile.makedirs(output_dir)
  if cfg.data.tfrecord_dir:
    from daml_tf.data import tfrecord  # Deferred: only TFRecord runs need it.
    if cfg.train.calibration_holdout:
      raise config_lib.ConfigError(
          "--calibration_holdout must be 0 with --tfrecord_dir: TFRecords hold whole training "
          "videos. Calibrate afterwards with python -m daml_tf.calibrate on held-out footage.")
    index = tfrecord.load_index(cfg.data.tfrecord_dir)
    tfrecord.check_index(index, cfg.data)
    return TrainingData(videos=(), holdout_videos=(),
                        background=tfrecord.load_background(cfg.data.tfrecord_dir))
  spec = registry.get_spec(cfg.data.dataset)
  root = layout.resolve_dataset_root(cfg.data.data_dir, spec)
  videos = layout.list_videos(root, "training", spec)
  layout.check_clip_length(videos, cfg.data.clip_span)
  videos, holdout = calibration.split_holdout(videos, cfg.train.calibration_holdout,
                                              cfg.data.clip_span)
  background = pipeline.load_or_compute_background(
      output_dir, videos, cfg.data.image_size, cfg.data.channels)
  return TrainingData(videos=tuple(videos), holdout_videos=tuple(holdout),
                      background=background)


def make_clip_data(cfg: config_lib.Config, data: TrainingData,
                   input_context: Optional[tf.distribute.InputContext] = None
                   ) -> pipeline.ClipData:
  """The training clips, for one input pipeline of `input_context` (None: the only one).

  With several input pipelines (multi-worker), each gets a disjoint share of the data and
  batches of the per-replica size.
  """
  if cfg.data.tfrecord_dir:
    from daml_tf.data import tfrecord
    return tfrecord.training_dataset(cfg.data.tfrecord_dir, data.background, cfg.data,
                                     training=True, input_context=input_context)
  return pipeline.training_dataset(data.videos, data.background, cfg.data, training=True,
                                   input_context=input_context)


class _Summaries:
  """TensorBoard scalars and images, written by the chief only."""

  def __init__(self, logdir: str, train_cfg: config_lib.TrainConfig, is_chief: bool = True):
    self._writer = (tf.summary.create_file_writer(logdir) if is_chief else
                    tf.summary.create_noop_writer())
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


def _restore_latest(checkpoint: tf.train.Checkpoint, checkpoint_dir: str) -> Optional[str]:
  """Restores the newest checkpoint of checkpoint_dir that can be read; returns its path.

  Checkpoint files are complete before the `checkpoint` state file names them (TensorFlow
  writes that file atomically, after the data), so a kill during a save leaves the state
  pointing at the previous checkpoint. Falling back to older ones also covers files damaged
  later, for example by a full disk.
  """
  state = tf.train.get_checkpoint_state(checkpoint_dir)
  if state is None:
    return None
  for path in reversed(list(state.all_model_checkpoint_paths)):
    try:
      checkpoint.restore(path).assert_existing_objects_matched()
      return path
    # A truncated file surfaces as an IndexError from the checkpoint reader.
    except (tf.errors.OpError, ValueError, AssertionError, IndexError) as error:
      logging.warning("Cannot restore %s (%s); trying an older checkpoint.", path,
                      str(error).splitlines()[0] if str(error) else type(error).__name__)
  raise TrainingError(f"No checkpoint in {checkpoint_dir} can be restored.")


def train(cfg: config_lib.Config) -> Dict[str, float]:
  """Trains (or resumes) both phases, then exports the scorer and calibrates the threshold.

  Every process of a multi-worker run calls this with the same config; only the chief writes
  into the model directory.

  Returns:
    The last epoch's mean losses, plus `input_wait_fraction` and the global step.
  """
  # Collective strategies must be created before TensorFlow runs its first op.
  strategy = make_strategy(cfg.train.strategy)
  role = worker_role(strategy)
  model_dir = cfg.train.model_dir
  layout.ensure_filesystem(model_dir)
  own_dir = model_dir if role.is_chief else scratch_dir(model_dir, role)
  keras.mixed_precision.set_global_policy(cfg.train.mixed_precision)
  keras.utils.set_random_seed(cfg.data.seed)
  check_resume_compatible(cfg, model_dir)
  data = prepare_training_data(cfg, own_dir)
  if role.is_chief:
    config_lib.save_config(cfg, os.path.join(model_dir, CONFIG_FILE))

  if strategy.cluster_resolver is not None:
    # Each worker builds its own share of the data (sharded by file or clip) at the
    # per-replica batch size.
    per_worker = {}

    def dataset_fn(input_context):
      per_worker["clip_data"] = make_clip_data(cfg, data, input_context)
      return per_worker["clip_data"].dataset

    distributed = strategy.distribute_datasets_from_function(dataset_fn)
    # Counted from the global clip count and batch, so every worker runs the same steps.
    num_clips = per_worker["clip_data"].total_clips
    steps_per_epoch = per_worker["clip_data"].steps_per_epoch(cfg.data.clips_per_epoch)
  else:
    clip_data = make_clip_data(cfg, data)
    distributed = strategy.experimental_distribute_dataset(clip_data.dataset)
    num_clips = clip_data.num_clips
    steps_per_epoch = clip_data.steps_per_epoch(cfg.data.clips_per_epoch)
  logging.info("%d training clips; %d steps of %d clips per epoch; %s on %d replica(s)%s",
               num_clips, steps_per_epoch, cfg.data.batch_size, cfg.train.strategy,
               strategy.num_replicas_in_sync, "" if role.is_chief else f" ({role.task})")

  with strategy.scope():
    model = build_model(cfg)
    model.set_background(data.background)
    compile_model(model, cfg.train)
    epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
    epoch_steps_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch_steps_done")
  checkpoint = make_checkpoint(model, epochs_done, epoch_steps_done)
  chief_checkpoint_dir = os.path.join(model_dir, CHECKPOINT_SUBDIR)
  manager = tf.train.CheckpointManager(
      checkpoint, os.path.join(own_dir, CHECKPOINT_SUBDIR), max_to_keep=3)
  # Every worker resumes from the chief's checkpoints, the only ones kept.
  restored = _restore_latest(checkpoint, chief_checkpoint_dir)
  if restored:
    logging.info("Resuming from %s: %d epoch(s) and %d step(s) of the next done, step %d",
                 restored, int(epochs_done.numpy()), int(epoch_steps_done.numpy()),
                 int(model.optimizer.iterations.numpy()))
  # The background is data, not a learned weight: the one just computed or loaded wins.
  model.set_background(data.background)

  def save_checkpoint() -> None:
    path = manager.save(checkpoint_number=model.optimizer.iterations)
    if role.is_chief:
      logging.info("Saved checkpoint %s", path)
    else:
      tf.io.gfile.rmtree(manager.directory)

  @tf.function
  def distributed_step(batch):
    per_replica = strategy.run(model.train_step, args=(batch,))
    return {
        name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
        for name, value in per_replica.items()
    }

  iterator = iter(distributed)
  schedule = epoch_schedule(cfg.train)
  summaries = _Summaries(os.path.join(model_dir, SUMMARY_SUBDIR), cfg.train, role.is_chief)
  loop = _EpochLoop(model, distributed_step, iterator, steps_per_epoch, cfg, summaries,
                    strategy, epoch_steps_done, save_checkpoint)
  last_epoch_values: Dict[str, float] = {}
  try:
    while int(epochs_done.numpy()) < len(schedule):
      phase, epoch = schedule[int(epochs_done.numpy())]
      model.set_phase_weights(phase.lambda_r, phase.lambda_p)
      learning_rate = learning_rate_for_epoch(cfg.train, epoch)
      model.optimizer.learning_rate = learning_rate
      logging.info("Phase %s, epoch %d/%d, lr %.3g", phase.name, epoch + 1, phase.epochs,
                   learning_rate)
      last_epoch_values = loop.run(phase, epoch)
      epochs_done.assign_add(1)
      epoch_steps_done.assign(0)
      save_checkpoint()
  finally:
    summaries.close()

  threshold = None
  if role.is_chief and cfg.train.calibrate:
    from daml_tf import calibration  # Deferred: calibration imports this module.
    threshold = calibration.calibrate_after_training(cfg, model, data.videos,
                                                     data.holdout_videos)
  if cfg.train.export:
    # The export carries the threshold, so a deployed model raises the same alarms.
    stored = None if threshold is None else {
        "threshold": threshold, "quantile": cfg.train.calibration_quantile}
    version_dir = serving.export_serving(model, os.path.join(own_dir, EXPORT_SUBDIR),
                                         data_cfg=cfg.data, threshold=stored)
    if role.is_chief:
      logging.info("Exported the serving SavedModel to %s", version_dir)
  if not role.is_chief:
    tf.io.gfile.rmtree(own_dir)
  if strategy.cluster_resolver is not None:
    _FINISHED_STRATEGIES.append(strategy)
  return dict(last_epoch_values, global_step=int(model.optimizer.iterations.numpy()))


# Collective strategies of finished runs. Destroying one waits on its peers, which may have
# exited already (up to the coordination service's heartbeat timeout, 40 s here), so they live
# until the process ends; `daml_tf.train` then exits without the runtime's teardown.
_FINISHED_STRATEGIES = []


def _collective_failure(error: tf.errors.OpError) -> str:
  """The line of a failed collective's error that says why ("... aborted by: Connection reset
  by peer"), rather than its generic first line."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  for line in lines:
    if "aborted by" in line or "unavailable" in line.lower():
      return line.rstrip(".")
  return lines[-1] if lines else type(error).__name__


class _EpochLoop:
  """Runs the steps of one epoch (or what is left of it after a resume)."""

  def __init__(self, model, distributed_step, iterator, steps, cfg, summaries, strategy,
               epoch_steps_done, save_checkpoint):
    self._model = model
    self._step_fn = distributed_step
    self._iterator = iterator
    self._steps = steps
    self._cfg = cfg
    self._summaries = summaries
    self._strategy = strategy
    self._epoch_steps_done = epoch_steps_done
    self._save_checkpoint = save_checkpoint

  def run(self, phase: Phase, epoch: int) -> Dict[str, float]:
    model, cfg, steps = self._model, self._cfg, self._steps
    every = cfg.train.checkpoint_every_steps
    first = int(self._epoch_steps_done.numpy())
    if first:
      # The data order restarts with a fresh shuffle; the epoch is completed with as many
      # batches as it still had to run.
      logging.info("Continuing phase %s epoch %d at batch %d of %d", phase.name, epoch + 1,
                   first + 1, steps)
    model.reset_metrics()
    progress = _Progress(steps)
    wait_seconds = 0.0
    epoch_start = time.perf_counter()
    values: Dict[str, float] = {}
    for step_in_epoch in range(first, steps):
      step_start = time.perf_counter()
      batch = next(self._iterator)
      fetched = time.perf_counter()
      try:
        outputs = self._step_fn(batch)
      except (tf.errors.UnavailableError, tf.errors.AbortedError,
              tf.errors.CancelledError) as error:
        if self._strategy.cluster_resolver is None:
          raise
        # A peer died: the collective cannot finish, and this process's runtime cannot be reset.
        raise TrainingError(
            f"Lost contact with another worker during step "
            f"{int(model.optimizer.iterations.numpy()) + 1} (phase {phase.name}, epoch "
            f"{epoch + 1}): {_collective_failure(error)}. Restart every worker with the "
            "same command; training resumes from the last checkpoint in "
            f"{os.path.join(cfg.train.model_dir, CHECKPOINT_SUBDIR)}.") from None
      values = {name: float(value.numpy()) for name, value in outputs.items()}
      done = time.perf_counter()
      wait_seconds += fetched - step_start
      global_step = int(model.optimizer.iterations.numpy())
      if not math.isfinite(values["total_loss"]):
        raise TrainingError(
            f"Non-finite loss at step {global_step} (phase {phase.name}, epoch {epoch + 1}, "
            f"batch {step_in_epoch + 1}): {values}. Training stopped; the last good checkpoint "
            f"in {os.path.join(cfg.train.model_dir, CHECKPOINT_SUBDIR)} is kept.")
      self._epoch_steps_done.assign(step_in_epoch + 1)
      self._summaries.step(global_step, values)
      self._summaries.images(global_step, model,
                             self._strategy.experimental_local_results(batch)[0])
      progress.update(step_in_epoch + 1, values,
                      cfg.data.batch_size / max(done - step_start, 1e-9))
      # The epoch's last step is saved by the epoch-end checkpoint.
      if every and global_step % every == 0 and step_in_epoch + 1 < steps:
        self._save_checkpoint()
    elapsed = time.perf_counter() - epoch_start
    ran = steps - first
    epoch_values = {name: float(tracker.result())
                    for name, tracker in model.loss_trackers.items()}
    epoch_values["learning_rate"] = values.get("learning_rate", float("nan"))
    epoch_values["input_wait_fraction"] = wait_seconds / max(elapsed, 1e-9)
    epoch_values["clips_per_second"] = ran * cfg.data.batch_size / max(elapsed, 1e-9)
    self._summaries.epoch(int(model.optimizer.iterations.numpy()), epoch_values)
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
