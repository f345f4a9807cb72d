"""The two phases' schedule: which phase each epoch belongs to, its loss weights and its
learning rate."""

import dataclasses
from typing import List, Tuple

import keras

from daml_tf import config as config_lib
from daml_tf.models import DAML


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
