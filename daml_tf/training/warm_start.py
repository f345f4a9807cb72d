"""Warm start (--init_from): the weights of another run or of a serving export."""

import os
from typing import List, Optional

from absl import logging
import tensorflow as tf

from daml_tf import config as config_lib
from daml_tf import errors
from daml_tf import run_dir
from daml_tf.inference import litert
from daml_tf.inference import serving
from daml_tf.models import DAML
from daml_tf.models import build
from daml_tf.models import scores


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
