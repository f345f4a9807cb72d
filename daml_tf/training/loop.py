"""Two-phase DAML training: a custom distributed loop around `DAML.train_step`.

The loop is ours rather than `Model.fit` so that it can (1) time how long each step waits for
input, (2) checkpoint phase and epoch together with the weights and optimizer, and (3) run the
same per-replica step under any tf.distribute strategy, including the multi-worker one where
Keras 3's fit does not work on TF 2.16.
"""

import dataclasses
import math
import os
import time
from typing import Dict, List, Optional, Tuple

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from daml_tf import fileio
from daml_tf import config as config_lib
from daml_tf.training import distributed
from daml_tf import errors
from daml_tf import progress as progress_lib
from daml_tf import run_dir
from daml_tf.evaluation import speedup_check
from daml_tf.data import layout
from daml_tf.data import pipeline
from daml_tf.data import tfrecord
from daml_tf.inference import litert
from daml_tf.inference import serving
from daml_tf.models import DAML
from daml_tf.models import build
from daml_tf.models import scores


@dataclasses.dataclass(frozen=True)
class Phase:
  """One phase of the schedule; `trains` is what its steps optimise ("all" or "motion")."""

  name: str
  epochs: int
  lambda_r: float
  lambda_p: float
  trains: str = "all"


TRAIN, FINETUNE = "train", "finetune"


def phases(train_cfg: config_lib.TrainConfig) -> List[Phase]:
  return [
      Phase(TRAIN, train_cfg.train_epochs, train_cfg.train_lambda_r, train_cfg.train_lambda_p),
      Phase(FINETUNE, train_cfg.finetune_epochs, train_cfg.finetune_lambda_r,
            train_cfg.finetune_lambda_p, trains=train_cfg.finetune_trains),
  ]


def learning_rate_for_epoch(train_cfg: config_lib.TrainConfig, epoch_in_phase: int) -> float:
  """Step decay, restarted at each phase: lr * factor^(epoch // decay_epochs)."""
  if not train_cfg.lr_decay_epochs:
    return train_cfg.learning_rate
  return train_cfg.learning_rate * train_cfg.lr_decay_factor**(
      epoch_in_phase // train_cfg.lr_decay_epochs)


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
                    epoch_steps_done: Optional[tf.Variable] = None,
                    batches_drawn: Optional[tf.Variable] = None) -> tf.train.Checkpoint:
  """Weights, optimizer state (with the global step), the position in the schedule and the
  position in the data stream (batches drawn so far, finetune candidates' included)."""
  position = {name: variable for name, variable in (("epoch_steps_done", epoch_steps_done),
                                                    ("batches_drawn", batches_drawn))
              if variable is not None}
  return tf.train.Checkpoint(model=model, optimizer=model.optimizer, epochs_done=epochs_done,
                             **position)


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
  fileio.makedirs(output_dir)
  if cfg.data.tfrecord_dir:
    if cfg.train.pseudo_speeds:
      raise errors.ConfigError(
          "--pseudo_anomaly_weight needs the frames layout (--data_dir): TFRecord shards hold "
          "clips at the training interval only.")
    if cfg.train.calibration_holdout:
      raise errors.ConfigError(
          "--calibration_holdout must be 0 with --tfrecord_dir: TFRecords hold whole training "
          "videos. Calibrate afterwards with python -m daml_tf.calibrate on held-out footage.")
    index = tfrecord.load_index(cfg.data.tfrecord_dir)
    tfrecord.check_index(index, cfg.data)
    return TrainingData(videos=(), holdout_videos=(),
                        background=tfrecord.load_background(cfg.data.tfrecord_dir))
  _, videos = layout.find_videos(cfg.data.dataset, cfg.data.data_dir, "training")
  layout.check_clip_length(videos, cfg.data.clip_span)
  videos, holdout = layout.split_holdout(videos, cfg.train.calibration_holdout,
                                         cfg.data.clip_span)
  background = pipeline.load_or_compute_background(
      run_dir.background_path(output_dir), videos, cfg.data.image_size, cfg.data.channels)
  return TrainingData(videos=tuple(videos), holdout_videos=tuple(holdout),
                      background=background)


def make_clip_data(cfg: config_lib.Config, data: TrainingData,
                   input_context: Optional[tf.distribute.InputContext] = None,
                   batches_drawn: int = 0) -> pipeline.ClipData:
  """The training clips, for one input pipeline of `input_context` (None: the only one),
  continuing after the `batches_drawn` batches a resumed run already had.

  With several input pipelines (multi-worker), each gets a disjoint share of the data and
  batches of the per-replica size. TFRecords restart their stream (a fresh shuffle) instead:
  their shuffle buffer holds decoded clips, so skipping would decode everything drawn before.
  """
  if cfg.data.tfrecord_dir:
    return tfrecord.training_dataset(cfg.data.tfrecord_dir, data.background, cfg.data,
                                     training=True, input_context=input_context)
  return pipeline.training_dataset(data.videos, data.background, cfg.data, training=True,
                                   input_context=input_context,
                                   pseudo_speeds=cfg.train.pseudo_speeds,
                                   batches_drawn=batches_drawn)


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


def _progress_values(values: Dict[str, float], clips_per_second: float):
  return [("loss", values["total_loss"]), ("recon", values["recon_loss"]),
          ("latent", values["latent_loss"]), ("clips/s", clips_per_second),
          ("lr", values["learning_rate"])] + [
              (name, values[name]) for name in ("pseudo_loss", "pseudo_latent_sse")
              if name in values]


# Counters added to the checkpoint after daml_tf first shipped one; older checkpoints lack them.
_LATER_COUNTERS = ("epoch_steps_done", "batches_drawn")


def _restore_one(checkpoint: tf.train.Checkpoint, path: str) -> None:
  """Restores `path` into `checkpoint`, also when it predates a counter of _LATER_COUNTERS.

  Checkpoints of daml_tf before `epoch_steps_done` existed (the shipped pretrained/ped2_cpu)
  hold whole epochs only; the counter then stays 0, which is what it meant for them. Before
  `batches_drawn` existed a resumed run restarted the data stream, which a 0 also means.
  """
  names = tf.train.load_checkpoint(path).get_variable_to_shape_map()
  present = {counter: getattr(checkpoint, counter) for counter in _LATER_COUNTERS
             if hasattr(checkpoint, counter) and
             any(name.startswith(counter) for name in names)}
  checkpoint = tf.train.Checkpoint(model=checkpoint.model, optimizer=checkpoint.optimizer,
                                   epochs_done=checkpoint.epochs_done, **present)
  checkpoint.restore(path).assert_existing_objects_matched()


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
      _restore_one(checkpoint, path)
      return path
    # A truncated file surfaces as an IndexError from the checkpoint reader.
    except (tf.errors.OpError, ValueError, AssertionError, IndexError) as error:
      logging.warning("Cannot restore %s (%s); trying an older checkpoint.", path,
                      str(error).splitlines()[0] if str(error) else type(error).__name__)
  raise errors.TrainingError(f"No checkpoint in {checkpoint_dir} can be restored.")


def init_checkpoint(cfg: config_lib.Config) -> Optional[str]:
  """The checkpoint (or serving export) of cfg.train.init_from to start from, or None (none
  asked for, or the run has checkpoints of its own and resumes from them).

  Called before anything is written, so a wrong --init_from leaves no run directory behind.

  Raises:
    ConfigError: no checkpoint there, one of another architecture (naming the differences), a
      LiteRT export, or a serving export for a run that trains the decoder.
  """
  if not cfg.train.init_from or tf.train.get_checkpoint_state(
      run_dir.checkpoint_dir(cfg.train.model_dir)):
    return None
  export = serving.find_version_dir(cfg.train.init_from)
  if export:
    check_export_init(cfg, export)
    return export
  _refuse_litert(cfg.train.init_from)
  path, saved = run_dir.init_checkpoint(cfg.train.init_from)
  differences = [] if saved is None else run_dir.architecture_differences(
      saved, cfg, loss_fields=False)
  if differences:
    raise errors.ConfigError(
        f"--init_from={cfg.train.init_from} holds a model of another architecture "
        f"({'; '.join(differences)}): give those flags the saved values.")
  return path


def _refuse_litert(path: str) -> None:
  path = path.rstrip("/")
  if litert.is_litert_dir(path) or any(litert.is_litert_dir(serving.version_dir(path, v))
                                       for v in serving.version_numbers(path)):
    raise errors.ConfigError(
        f"--init_from={path} is a LiteRT export: its flatbuffers hold inference graphs, not "
        "weights a Keras model can load. Give the training run it was exported from (its "
        "directory, with config.json and checkpoints/) or its serving export (export/<version>).")


def _decoder_uses(cfg: config_lib.Config) -> List[str]:
  """What in this run would train or read the decoder (which a serving export lacks)."""
  uses = []
  if cfg.train.train_epochs:
    uses.append(f"the train phase (--train_epochs={cfg.train.train_epochs})")
  if cfg.train.finetune_epochs and cfg.train.finetune_trains != "motion":
    uses.append(f"--finetune_trains={cfg.train.finetune_trains}")
  if scores.get_score(cfg.eval.score).needs_frames:
    uses.append(f"--score={cfg.eval.score}")
  return uses


def check_export_init(cfg: config_lib.Config, export: str) -> None:
  """Refuses a serving export as --init_from where it cannot stand in for a run's checkpoint.

  An export holds the encoder, the motion model and the background, not the decoder. It can
  therefore start a run that leaves the decoder alone: the motion model adapted to new footage
  on the codes of the export's frozen encoder (--train_epochs=0 --finetune_trains=motion).

  Raises:
    ConfigError: the run would train or read the decoder (naming what to give instead), or the
      export's geometry differs from the run's.
  """
  uses = _decoder_uses(cfg)
  if uses:
    run = os.path.dirname(os.path.dirname(export))
    hint = f"; here probably --init_from={run}" if run_dir.is_run_dir(run) else ""
    raise errors.ConfigError(
        f"--init_from={cfg.train.init_from} is a serving export: it holds the encoder and the "
        f"motion model but not the decoder, which {' and '.join(uses)} would need. Give the "
        f"training run it was exported from (its directory, with config.json and "
        f"checkpoints/{hint}), or adapt only the motion model on the export's frozen encoder "
        "with --train_epochs=0 --finetune_trains=motion.")
  metadata = serving.read_metadata(export)
  saved = {"image_height": metadata["image_size"][0], "image_width": metadata["image_size"][1],
           "channels": metadata["channels"], "time_steps": metadata["time_steps"]}
  differences = [f"{name}: saved {value} vs now {getattr(cfg.data, name)}"
                 for name, value in saved.items() if value != getattr(cfg.data, name)]
  if differences:
    raise errors.ConfigError(
        f"--init_from={cfg.train.init_from} holds a model of another geometry "
        f"({'; '.join(differences)}): give those flags the saved values.")


def init_weights(model: DAML, cfg: config_lib.Config, path: str) -> None:
  """Loads the model weights of checkpoint `path` (or of the serving export `path`: the encoder
  and the motion model) into `model`.

  Only the model is read: the optimizer's slots and step, and the position in the schedule,
  stay as built (fresh), since the new run has its own data and schedule.

  Raises:
    ConfigError: the checkpoint's weights do not fit the model.
  """
  # Restored into a model of its own, without an optimizer: a Keras model tracks its optimizer,
  # so restoring into the training model would also bring back the old run's step and slots.
  source = build.float32_model(cfg)
  from_export = serving.is_saved_model_dir(path)
  try:
    if from_export:
      serving.read_weights(path, source)
    else:
      tf.train.Checkpoint(model=source).restore(path).expect_partial(
          ).assert_existing_objects_matched()
  except (ValueError, AssertionError, tf.errors.OpError) as error:
    # Without a config.json beside the checkpoint, a mismatch shows up here as a shape error.
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    raise errors.ConfigError(f"--init_from={cfg.train.init_from}: cannot load {path} into "
                             f"this model ({first_line}).") from None
  if from_export:
    pairs = [pair for part in ("encoder", "motion")
             for pair in zip(getattr(model, part).weights, getattr(source, part).weights)]
  else:
    pairs = zip(model.weights, source.weights)
  for weight, value in pairs:
    weight.assign(tf.cast(value, weight.dtype))
  logging.info("Initialised the %s weights from %s; optimizer and schedule start fresh.",
               "encoder and motion model" if from_export else "model", path)


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """What `train` hands back.

  Attributes:
    model: the trained model (under the run's dtype policy and strategy).
    data: the training data, for calibration after training.
    metrics: the last epoch's mean losses, `input_wait_fraction` and `global_step`.
    role: which process of the run this is.
    strategy: the run's strategy; holding it keeps a multi-worker runtime alive (see
      daml_tf.training.distributed).
  """

  model: DAML
  data: TrainingData
  metrics: Dict[str, float]
  role: distributed.WorkerRole
  strategy: tf.distribute.Strategy


class _Checkpoints:
  """The run's checkpoint (weights, optimizer, position in the schedule) and its manager.

  Every process saves (a save may run collective ops) into its own directory, but all of them
  resume from the chief's checkpoints, the only ones kept.
  """

  def __init__(self, model: DAML, model_dir: str, role: distributed.WorkerRole,
               to_keep: int):
    self.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
    self.epoch_steps_done = tf.Variable(0, dtype=tf.int64, trainable=False,
                                        name="epoch_steps_done")
    self.batches_drawn = tf.Variable(0, dtype=tf.int64, trainable=False, name="batches_drawn")
    self._model = model
    self._model_dir = model_dir
    self._role = role
    self._checkpoint = make_checkpoint(model, self.epochs_done, self.epoch_steps_done,
                                       self.batches_drawn)
    self._manager = tf.train.CheckpointManager(
        self._checkpoint, run_dir.checkpoint_dir(distributed.own_dir(model_dir, role)),
        max_to_keep=to_keep or None)  # 0 (--checkpoints_to_keep): keep every one

  def restore(self) -> bool:
    """Restores the run's newest checkpoint; returns whether there was one."""
    restored = _restore_latest(self._checkpoint, run_dir.checkpoint_dir(self._model_dir))
    if restored:
      logging.info("Resuming from %s: %d epoch(s) and %d step(s) of the next done, step %d, "
                   "%d batches drawn", restored, int(self.epochs_done.numpy()),
                   int(self.epoch_steps_done.numpy()),
                   int(self._model.optimizer.iterations.numpy()),
                   int(self.batches_drawn.numpy()))
    return bool(restored)

  def save(self) -> None:
    path = self._manager.save(checkpoint_number=self._model.optimizer.iterations)
    if self._role.is_chief:
      logging.info("Saved checkpoint %s", path)
      # A run directory on s3:// (...) is a local mirror: the checkpoint reaches the store now,
      # so a preempted run resumes from it.
      fileio.sync_mirrors()
    else:
      fileio.rmtree(self._manager.directory)


class _PipelineOfWorker:
  """The dataset function of distribute_datasets_from_function, remembering its ClipData.

  Each worker builds its own share of the data (sharded by file or clip) at the per-replica
  batch size; the epoch length comes from the global clip count, the same on every worker.
  """

  def __init__(self, cfg: config_lib.Config, data: TrainingData, batches_drawn: int):
    self._cfg = cfg
    self._data = data
    self._batches_drawn = batches_drawn
    self.clip_data = None

  def __call__(self, input_context: tf.distribute.InputContext) -> tf.data.Dataset:
    self.clip_data = make_clip_data(self._cfg, self._data, input_context, self._batches_drawn)
    return self.clip_data.dataset


def _distribute_data(strategy: tf.distribute.Strategy, cfg: config_lib.Config,
                     data: TrainingData, role: distributed.WorkerRole, batches_drawn: int = 0):
  """(distributed dataset, global steps per epoch) of the training clips, continuing after
  `batches_drawn` global batches."""
  if batches_drawn and cfg.data.tfrecord_dir:
    logging.info("Resumed on TFRecords: the data stream restarts with a fresh shuffle.")
  if distributed.is_multi_worker(strategy):
    pipeline_of_worker = _PipelineOfWorker(cfg, data, batches_drawn)
    dataset = strategy.distribute_datasets_from_function(pipeline_of_worker)
    clip_data = pipeline_of_worker.clip_data
    num_clips = clip_data.total_clips
  else:
    clip_data = make_clip_data(cfg, data, batches_drawn=batches_drawn)
    dataset = strategy.experimental_distribute_dataset(clip_data.dataset)
    num_clips = clip_data.num_clips
  steps_per_epoch = clip_data.steps_per_epoch(cfg.data.clips_per_epoch)
  logging.info("%d training clips; %d steps of %d clips per epoch; %s on %d replica(s)%s",
               num_clips, steps_per_epoch, cfg.data.batch_size, cfg.train.strategy,
               strategy.num_replicas_in_sync, "" if role.is_chief else f" ({role.task})")
  return dataset, steps_per_epoch


def _step_function(strategy: tf.distribute.Strategy, model: DAML, trains: str,
                   train_cfg: config_lib.TrainConfig):
  """One training step of `trains` ("all" or "motion") on every replica, averaged over them."""

  def replica_step(batch):
    return model.train_step(batch, trains=trains,
                            pseudo_anomaly_weight=train_cfg.pseudo_anomaly_weight,
                            pseudo_anomaly_margin=train_cfg.pseudo_anomaly_margin)

  @tf.function
  def distributed_step(batch):
    per_replica = strategy.run(replica_step, args=(batch,))
    return {
        name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
        for name, value in per_replica.items()
    }

  return distributed_step


def train(cfg: config_lib.Config,
          strategy: Optional[tf.distribute.Strategy] = None) -> TrainedRun:
  """Trains (or resumes) both phases; calibration and export are the caller's (daml_tf.train).

  Every process of a multi-worker run calls this with the same config; only the chief writes
  into the model directory.

  Args:
    cfg: the run's config.
    strategy: default: the one of cfg.train.strategy, created here. A collective strategy must
      be created before TensorFlow runs its first op.

  Returns:
    TrainedRun; its metrics are the last epoch's mean losses plus `input_wait_fraction` and
    `global_step`.
  """
  strategy = strategy or distributed.make_strategy(cfg.train.strategy)
  role = distributed.worker_role(strategy)
  model_dir = cfg.train.model_dir
  layout.ensure_filesystem(model_dir)
  build.motion_class(cfg.model.motion)  # An unknown name stops the run before data is read.
  keras.utils.set_random_seed(cfg.data.seed)
  run_dir.check_resume_compatible(cfg, model_dir)
  init_path = init_checkpoint(cfg)
  data = prepare_training_data(cfg, distributed.own_dir(model_dir, role))
  if role.is_chief:
    run_dir.save_config(cfg, model_dir)
  with strategy.scope(), build.dtype_policy(cfg.train.mixed_precision):
    model = build.build_model(cfg)
    compile_model(model, cfg.train)
    checkpoints = _Checkpoints(model, model_dir, role, cfg.train.checkpoints_to_keep)
  if not checkpoints.restore() and init_path:
    init_weights(model, cfg, init_path)
  # After the restore: the data stream continues where the checkpoint left it.
  dataset, steps_per_epoch = _distribute_data(strategy, cfg, data, role,
                                              int(checkpoints.batches_drawn.numpy()))
  # The background is data, not a learned weight: the one just computed or loaded wins.
  model.set_background(data.background)
  summaries = _Summaries(run_dir.summary_dir(model_dir), cfg.train, role.is_chief)
  step_functions = {trains: _step_function(strategy, model, trains, cfg.train)
                    for trains in config_lib.FINETUNE_TRAINS_CHOICES}
  loop = _EpochLoop(model, step_functions, iter(dataset), steps_per_epoch, cfg,
                    summaries, strategy, checkpoints.epoch_steps_done, checkpoints.batches_drawn,
                    checkpoints.save)
  candidates = (_FinetuneCandidates(cfg, model, data, role)
                if cfg.train.finetune_candidates > 1 else None)
  try:
    metrics = _run_schedule(cfg, model, loop, checkpoints, candidates)
  finally:
    summaries.close()
  metrics["global_step"] = int(model.optimizer.iterations.numpy())
  return TrainedRun(model=model, data=data, metrics=metrics, role=role, strategy=strategy)


def _run_schedule(cfg: config_lib.Config, model: DAML, loop: "_EpochLoop",
                  checkpoints: _Checkpoints,
                  candidates: Optional["_FinetuneCandidates"] = None) -> Dict[str, float]:
  """Runs the epochs of the schedule not done yet; returns the last one's values.

  With finetune candidates, the finetune phase is run by `candidates` when it starts (a run
  resumed in the middle of its finetune phase finishes it once, without candidates).
  """
  schedule = epoch_schedule(cfg.train)
  last_epoch_values: Dict[str, float] = {}
  while int(checkpoints.epochs_done.numpy()) < len(schedule):
    done = int(checkpoints.epochs_done.numpy())
    phase, epoch = schedule[done]
    if (candidates is not None and phase.name == FINETUNE and epoch == 0 and
        not int(checkpoints.epoch_steps_done.numpy())):
      last_epoch_values = candidates.run(loop, checkpoints, schedule[done:])
      checkpoints.save()
      continue
    last_epoch_values = _run_epoch(cfg, model, loop, phase, epoch)
    checkpoints.epochs_done.assign_add(1)
    checkpoints.epoch_steps_done.assign(0)
    checkpoints.save()
  return dict(last_epoch_values)


def _run_epoch(cfg: config_lib.Config, model: DAML, loop: "_EpochLoop", phase: Phase,
               epoch: int) -> Dict[str, float]:
  model.set_phase_weights(phase.lambda_r, phase.lambda_p)
  learning_rate = learning_rate_for_epoch(cfg.train, epoch)
  model.optimizer.learning_rate = learning_rate
  logging.info("Phase %s, epoch %d/%d, lr %.3g", phase.name, epoch + 1, phase.epochs,
               learning_rate)
  return loop.run(phase, epoch)


class _FinetuneCandidates:
  """Runs the finetune phase --finetune_candidates times from one start; keeps the best.

  Each candidate starts from the same weights and optimizer state (copied to host memory when
  the phase starts) and trains on the next batches of the one data stream, so the candidates
  differ in their batch order only. The kept one has the highest speed-up check
  (daml_tf.evaluation.speedup_check) on the training footage: on Ped2, the batch order of the finetune
  epoch alone moved a run's micro AUC by up to 0.075, and picking the best of four orders by
  the check gained 0.017 micro and 0.022 pooled raw AUC on average over five encoders, better
  in all five; in three seeds trained with it, though, the kept candidate was no better than
  the first (README "Several finetunes, keep the best").

  No checkpoint is written while candidates run: a run killed among them resumes from the end
  of the train phase and runs all of them again, on the same batches (the data stream resumes
  where that checkpoint left it).
  """

  def __init__(self, cfg: config_lib.Config, model: DAML, data: "TrainingData",
               role: distributed.WorkerRole):
    self._cfg = cfg
    self._model = model
    self._data = data
    self._role = role
    speedup = speedup_check.DEFAULT_SPEEDUP
    if not speedup_check.long_enough(list(data.videos) + list(data.holdout_videos), cfg.data,
                                     speedup):
      raise errors.ConfigError(
          f"--finetune_candidates={cfg.train.finetune_candidates} compares candidates on the "
          "training footage played twice as fast, which needs a video of more than "
          f"{speedup_check.sped_up(cfg.data, speedup).clip_span} frames in the frames layout "
          "(not --tfrecord_dir).")
    if scores.get_score(cfg.eval.score).parts:
      raise errors.ConfigError(
          f"--finetune_candidates compares candidates by their --score, and {cfg.eval.score} "
          "needs statistics that are computed after training; choose another --score.")

  def _state(self) -> List[np.ndarray]:
    return [v.numpy() for v in self._model.variables + self._model.optimizer.variables]

  def _set_state(self, state: List[np.ndarray]) -> None:
    for variable, value in zip(self._model.variables + self._model.optimizer.variables, state):
      variable.assign(value)

  def run(self, loop: "_EpochLoop", checkpoints: _Checkpoints,
          finetune_epochs: List[Tuple[Phase, int]]) -> Dict[str, float]:
    """Runs every candidate's finetune epochs; leaves the best in the model and the schedule
    position at the phase's end. Returns the kept candidate's last epoch values."""
    count = self._cfg.train.finetune_candidates
    start, start_done = self._state(), int(checkpoints.epochs_done.numpy())
    best = None
    checks = []
    loop.save_within_epochs = False
    for candidate in range(count):
      if candidate:
        self._set_state(start)
      checkpoints.epochs_done.assign(start_done)
      for phase, epoch in finetune_epochs:
        logging.info("Finetune candidate %d of %d", candidate + 1, count)
        values = _run_epoch(self._cfg, self._model, loop, phase, epoch)
        checkpoints.epochs_done.assign_add(1)
        checkpoints.epoch_steps_done.assign(0)
      check = speedup_check.check_footage(self._model, self._cfg, self._data.videos,
                                          self._data.holdout_videos)
      checks.append(check.auc)
      logging.info("Finetune candidate %d of %d: speed-up check %.4f", candidate + 1, count,
                   check.auc)
      if best is None or check.auc > best[0]:
        best = (check.auc, candidate, self._state() if candidate + 1 < count else None,
                values)
    loop.save_within_epochs = True
    if best[2] is not None:
      self._set_state(best[2])
    logging.info("Kept finetune candidate %d of %d (speed-up checks %s)", best[1] + 1, count,
                 ", ".join(f"{auc:.4f}" for auc in checks))
    if self._role.is_chief:
      run_dir.save_finetune_candidates(self._cfg.train.model_dir, {
          "speedup_checks": checks, "kept": best[1]})
    return best[3]


class _EpochLoop:
  """Runs the steps of one epoch (or what is left of it after a resume)."""

  def __init__(self, model, step_functions, iterator, steps, cfg, summaries, strategy,
               epoch_steps_done, batches_drawn, save_checkpoint):
    self._model = model
    # "all" / "motion" -> its distributed step function; each phase uses its own.
    self._step_functions = step_functions
    self._iterator = iterator
    self._steps = steps
    self._cfg = cfg
    self._summaries = summaries
    self._strategy = strategy
    self._epoch_steps_done = epoch_steps_done
    self._batches_drawn = batches_drawn
    self._save_checkpoint = save_checkpoint
    # Off while finetune candidates run: their mid-epoch state is not a point to resume from.
    self.save_within_epochs = True

  def run(self, phase: Phase, epoch: int) -> Dict[str, float]:
    model, cfg, steps = self._model, self._cfg, self._steps
    every = cfg.train.checkpoint_every_steps
    first = int(self._epoch_steps_done.numpy())
    if first:
      # The data stream continues where the checkpoint left it (TFRecords: a fresh shuffle);
      # the epoch is completed with as many batches as it still had to run.
      logging.info("Continuing phase %s epoch %d at batch %d of %d", phase.name, epoch + 1,
                   first + 1, steps)
    model.reset_metrics()
    # A line every tenth of the epoch in a log file.
    progress = progress_lib.Progress(steps, log_every=steps // 10,
                                     stateful_metrics=["clips/s", "lr"])
    wait_seconds = 0.0
    epoch_start = time.perf_counter()
    values: Dict[str, float] = {}
    for step_in_epoch in range(first, steps):
      step_start = time.perf_counter()
      batch = next(self._iterator)
      self._batches_drawn.assign_add(1)
      fetched = time.perf_counter()
      try:
        outputs = self._step_functions[phase.trains](batch)
      except (tf.errors.UnavailableError, tf.errors.AbortedError,
              tf.errors.CancelledError) as error:
        if self._strategy.cluster_resolver is None:
          raise
        # A peer died: the collective cannot finish, and this process's runtime cannot be reset.
        raise errors.TrainingError(
            f"Lost contact with another worker during step "
            f"{int(model.optimizer.iterations.numpy()) + 1} (phase {phase.name}, epoch "
            f"{epoch + 1}): {distributed.collective_failure(error)}. Restart every worker with the "
            "same command; training resumes from the last checkpoint in "
            f"{run_dir.checkpoint_dir(cfg.train.model_dir)}.") from None
      values = {name: float(value.numpy()) for name, value in outputs.items()}
      done = time.perf_counter()
      wait_seconds += fetched - step_start
      global_step = int(model.optimizer.iterations.numpy())
      if not math.isfinite(values["total_loss"]):
        raise errors.TrainingError(
            f"Non-finite loss at step {global_step} (phase {phase.name}, epoch {epoch + 1}, "
            f"batch {step_in_epoch + 1}): {values}. Training stopped; the last good checkpoint "
            f"in {run_dir.checkpoint_dir(cfg.train.model_dir)} is kept.")
      self._epoch_steps_done.assign(step_in_epoch + 1)
      self._summaries.step(global_step, values)
      local_batch = self._strategy.experimental_local_results(batch)[0]
      # With pseudo-anomalies a batch is (clips, pseudo-anomalous clips); pictures show clips.
      self._summaries.images(global_step, model, tf.nest.flatten(local_batch)[0])
      shown = _progress_values(values, cfg.data.batch_size / max(done - step_start, 1e-9))
      progress.update(step_in_epoch + 1, values=shown, log_line=lambda: "step %d/%d: %s" % (
          step_in_epoch + 1, steps, " ".join(f"{name} {value:.4g}" for name, value in shown)))
      # The epoch's last step is saved by the epoch-end checkpoint.
      if (self.save_within_epochs and every and global_step % every == 0 and
          step_in_epoch + 1 < steps):
        self._save_checkpoint()
    elapsed = time.perf_counter() - epoch_start
    ran = steps - first
    # Only the terms this epoch computed (no pseudo-anomaly terms when they are off).
    epoch_values = {name: float(tracker.result())
                    for name, tracker in model.loss_trackers.items() if name in values}
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
