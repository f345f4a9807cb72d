"""Two-phase DAML training: a custom distributed loop around `DAML.train_step`.

The loop is ours rather than `Model.fit` so that it can (1) time how long each step waits for
input, (2) checkpoint phase and epoch together with the weights and optimizer, and (3) run the
same per-replica step under any tf.distribute strategy, including the multi-worker one where
Keras 3's fit does not work on TF 2.16.
"""

import dataclasses
import math
import time
from typing import Dict, Optional

from absl import logging
import keras
import tensorflow as tf

from daml_tf import config as config_lib
from daml_tf.training import distributed
from daml_tf import errors
from daml_tf import progress as progress_lib
from daml_tf import run_dir
from daml_tf import fileio
from daml_tf.models import DAML
from daml_tf.models import build
from daml_tf.training.candidates import FinetuneCandidates
from daml_tf.training.checkpoints import Checkpoints
from daml_tf.training.data import TrainingData, distribute_data, prepare_training_data
from daml_tf.training.schedule import FINETUNE, Phase, compile_model, epoch_schedule
from daml_tf.training.schedule import learning_rate_for_epoch
from daml_tf.training.summaries import Summaries, progress_values
from daml_tf.training.warm_start import init_checkpoint, init_weights


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
  fileio.ensure_filesystem(model_dir)
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
    checkpoints = Checkpoints(model, model_dir, role, cfg.train.checkpoints_to_keep)
  if not checkpoints.restore() and init_path:
    init_weights(model, cfg, init_path)
  # After the restore: the data stream continues where the checkpoint left it.
  dataset, steps_per_epoch = distribute_data(strategy, cfg, data, role,
                                              int(checkpoints.batches_drawn.numpy()))
  # The background is data, not a learned weight: the one just computed or loaded wins.
  model.set_background(data.background)
  summaries = Summaries(run_dir.summary_dir(model_dir), cfg.train, role.is_chief)
  step_functions = {trains: _step_function(strategy, model, trains, cfg.train)
                    for trains in config_lib.FINETUNE_TRAINS_CHOICES}
  loop = _EpochLoop(model, step_functions, iter(dataset), steps_per_epoch, cfg,
                    summaries, strategy, checkpoints.epoch_steps_done, checkpoints.batches_drawn,
                    checkpoints.save)
  candidates = (FinetuneCandidates(cfg, model, data, role)
                if cfg.train.finetune_candidates > 1 else None)
  try:
    metrics = _run_schedule(cfg, model, loop, checkpoints, candidates)
  finally:
    summaries.close()
  metrics["global_step"] = int(model.optimizer.iterations.numpy())
  return TrainedRun(model=model, data=data, metrics=metrics, role=role, strategy=strategy)

def _run_schedule(cfg: config_lib.Config, model: DAML, loop: "_EpochLoop",
                  checkpoints: Checkpoints,
                  candidates: Optional["FinetuneCandidates"] = None) -> Dict[str, float]:
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
      last_epoch_values = candidates.run(loop, checkpoints, schedule[done:], _run_epoch)
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
      shown = progress_values(values, cfg.data.batch_size / max(done - step_start, 1e-9))
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
