"""Finetune candidates (--finetune_candidates): several finetune phases from one start, the
best kept."""

from typing import Callable, Dict, List, Tuple

from absl import logging
import numpy as np

from daml_tf import config as config_lib
from daml_tf.training import distributed
from daml_tf import errors
from daml_tf import run_dir
from daml_tf.evaluation import speedup_check
from daml_tf.models import DAML
from daml_tf.models import scores
from daml_tf.training.checkpoints import Checkpoints
from daml_tf.training.data import TrainingData
from daml_tf.training.schedule import Phase


class FinetuneCandidates:
  """Runs the finetune phase --finetune_candidates times from one start; keeps the best.

  Each candidate starts from the same weights and optimizer state (copied to host memory when
  the phase starts) and trains on the next batches of the one data stream, so the candidates
  differ in their batch order only. The kept one has the highest speed-up check
  (daml_tf.evaluation.speedup_check) on the training footage: on Ped2, the batch order of the
  finetune epoch alone moved a run's micro AUC by up to 0.075, and picking the best of four
  orders by the check gained 0.017 micro and 0.022 pooled raw AUC on average over five encoders, better
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

  def run(self, loop, checkpoints: Checkpoints, finetune_epochs: List[Tuple[Phase, int]],
          run_epoch: Callable[..., Dict[str, float]]) -> Dict[str, float]:
    """Runs every candidate's finetune epochs; leaves the best in the model and the schedule
    position at the phase's end. Returns the kept candidate's last epoch values.

    Args:
      loop: the run's epoch loop (training.loop), handed to run_epoch.
      checkpoints: the run's checkpoints.
      finetune_epochs: (phase, epoch) of the finetune phase's epochs.
      run_epoch: runs one epoch: (cfg, model, loop, phase, epoch) -> its values.
    """
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
        values = run_epoch(self._cfg, self._model, loop, phase, epoch)
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
