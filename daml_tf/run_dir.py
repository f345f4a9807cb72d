"""A training run's directory: the one place that names its files, and reads and writes them.

  <model_dir>/
    config.json        the resolved config of the run (`load_config`, `save_config`)
    checkpoints/       tf.train checkpoints: weights, optimizer, position in the schedule
    background.npy     the per-pixel mean of the training frames
    threshold.json     the alarm threshold ({"threshold", "quantile"}; `load_threshold`)
    motion_norm.json   a motion score's normalisation of the optical flow (`load_motion_norm`)
    train/             TensorBoard summaries
    eval/              what `daml_tf.evaluate` writes (metrics.json, scores.csv, plots;
                       heatmaps/<video>_<frame>.png with --heatmaps)
    export/<version>/  the serving SavedModel; export/litert/<version>/ the LiteRT export
    workers_scratch/   non-chief workers' copies while a multi-worker run trains
"""

import dataclasses
import json
import os
from typing import Dict, List, Optional, Tuple

from absl import logging
import tensorflow as tf

from daml_tf import fileio
from daml_tf import config as config_lib
from daml_tf import errors
from daml_tf.data import motion_maps
from daml_tf.models import DAML
from daml_tf.models import build

CONFIG_FILE = "config.json"
CHECKPOINT_SUBDIR = "checkpoints"
BACKGROUND_FILE = "background.npy"
THRESHOLD_FILE = "threshold.json"
SCORE_STATS_FILE = "score_stats.json"
MOTION_NORM_FILE = "motion_norm.json"
SPEEDUP_CHECK_FILE = "speedup_check.json"
FINETUNE_CANDIDATES_FILE = "finetune_candidates.json"
SUMMARY_SUBDIR = "train"
EVAL_SUBDIR = "eval"
# Inside an evaluation's output directory.
HEATMAPS_SUBDIR = "heatmaps"
EXPORT_SUBDIR = "export"
# Not a number, so TF Serving, which loads the highest numeric version, ignores it.
LITERT_SUBDIR = "litert"
SCRATCH_SUBDIR = "workers_scratch"


def config_path(model_dir: str) -> str:
  return os.path.join(model_dir, CONFIG_FILE)


def checkpoint_dir(model_dir: str) -> str:
  return os.path.join(model_dir, CHECKPOINT_SUBDIR)


def background_path(model_dir: str) -> str:
  return os.path.join(model_dir, BACKGROUND_FILE)


def summary_dir(model_dir: str) -> str:
  return os.path.join(model_dir, SUMMARY_SUBDIR)


def eval_dir(model_dir: str) -> str:
  return os.path.join(model_dir, EVAL_SUBDIR)


def export_dir(model_dir: str) -> str:
  """The serving SavedModel's base path (numbered versions below it)."""
  return os.path.join(model_dir, EXPORT_SUBDIR)


def litert_dir(export_base: str, version: int) -> str:
  """`<export_base>/litert/<version>`, the LiteRT export beside the SavedModel versions."""
  return os.path.join(export_base, LITERT_SUBDIR, str(int(version)))


def scratch_dir(model_dir: str, task: str) -> str:
  """Where the non-chief worker `task` writes what the chief writes into model_dir."""
  return os.path.join(model_dir, SCRATCH_SUBDIR, task)


def is_run_dir(path: str) -> bool:
  """Whether `path` holds a training run (its config.json)."""
  return fileio.exists(config_path(path))


def load_config(model_dir: str) -> config_lib.Config:
  """The resolved config of a training run; FileNotFoundError if model_dir has none."""
  if not is_run_dir(model_dir):
    raise FileNotFoundError(
        f"No {CONFIG_FILE} in {model_dir!r}: not a trained model directory (train one with "
        f"python -m daml_tf.train --model_dir={model_dir} ...).")
  return config_lib.load_config(config_path(model_dir))


def save_config(cfg: config_lib.Config, model_dir: str) -> None:
  fileio.makedirs(model_dir)
  config_lib.save_config(cfg, config_path(model_dir))


# What the shapes of the weights depend on: the frame geometry (the background is a weight, the
# motion model sees time_steps codes) and the model fields. weight_decay and
# latent_loss_trains_encoder only change the loss, so a fine-tune may change them.
_GEOMETRY_FIELDS = ("image_height", "image_width", "channels", "time_steps")
_LOSS_ONLY_MODEL_FIELDS = ("weight_decay", "latent_loss_trains_encoder")


def architecture_differences(saved: config_lib.Config, cfg: config_lib.Config,
                             loss_fields: bool = True) -> List[str]:
  """`name: saved X vs now Y` for every geometry or model field that differs.

  Args:
    saved: the config the weights were trained with.
    cfg: the config of the run that wants them.
    loss_fields: also compare the model fields that change only the loss (a resumed run must
      keep them; a run initialised from other weights may change them).
  """
  model_fields = [field.name for field in dataclasses.fields(cfg.model)
                  if loss_fields or field.name not in _LOSS_ONLY_MODEL_FIELDS]
  return [
      f"{name}: saved {getattr(saved.data, name)} vs now {getattr(cfg.data, name)}"
      for name in _GEOMETRY_FIELDS if getattr(saved.data, name) != getattr(cfg.data, name)
  ] + [
      f"{name}: saved {getattr(saved.model, name)} vs now {getattr(cfg.model, name)}"
      for name in model_fields if getattr(saved.model, name) != getattr(cfg.model, name)
  ]


def check_resume_compatible(cfg: config_lib.Config, model_dir: str) -> None:
  """Refuses to resume from a model directory trained with another architecture or geometry."""
  if not is_run_dir(model_dir):
    return
  saved = config_lib.load_config(config_path(model_dir))
  differences = architecture_differences(saved, cfg)
  if differences:
    raise errors.ConfigError(
        f"{model_dir} holds a model with another configuration ({'; '.join(differences)}). "
        "Use a new --model_dir or the original flags.")


def init_checkpoint(path: str) -> Tuple[str, Optional[config_lib.Config]]:
  """(checkpoint, its run's config or None) of --init_from.

  Args:
    path: a run directory (config.json, checkpoints/), its checkpoints/ folder (the run's
      config is then looked for one level up), or one checkpoint's prefix (.../ckpt-N).

  Raises:
    ConfigError: path holds no checkpoint.
  """
  path = path.rstrip("/")
  if is_run_dir(path):
    latest = tf.train.latest_checkpoint(checkpoint_dir(path))
    run = path
  elif fileio.exists(path + ".index"):
    latest, run = path, os.path.dirname(os.path.dirname(path))
  else:
    latest, run = tf.train.latest_checkpoint(path), os.path.dirname(path)
  if not latest:
    raise errors.ConfigError(
        f"--init_from={path}: no checkpoint there; give a run directory (config.json, "
        "checkpoints/), its checkpoints/ folder or a checkpoint prefix (.../ckpt-N).")
  return latest, (load_config(run) if is_run_dir(run) else None)


def restore_model(cfg: config_lib.Config, model_dir: Optional[str] = None) -> DAML:
  """Builds the model of `cfg` in float32 and restores the newest checkpoint of `model_dir`.

  Scoring always runs in float32, whatever policy the model was trained under; the global
  dtype policy is left as it was.
  """
  model_dir = model_dir or cfg.train.model_dir
  check_resume_compatible(cfg, model_dir)
  model = build.float32_model(cfg)
  latest = tf.train.latest_checkpoint(checkpoint_dir(model_dir))
  if not latest:
    raise FileNotFoundError(
        f"No checkpoint in {checkpoint_dir(model_dir)}: train first with "
        f"python -m daml_tf.train --model_dir={model_dir} ...")
  tf.train.Checkpoint(model=model).restore(latest).expect_partial()
  logging.info("Restored %s", latest)
  return model


def load_run_config(model_dir: str, data_dir: str = "") -> config_lib.Config:
  """The run's config; `data_dir` replaces the dataset folder the run was trained on (the data
  may have moved since)."""
  cfg = load_config(model_dir)
  if data_dir:
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, data_dir=data_dir))
  return cfg


def restore_run(model_dir: str, data_dir: str = "") -> Tuple[config_lib.Config, DAML]:
  """(the run's config as `load_run_config` gives it, its restored float32 model)."""
  cfg = load_run_config(model_dir, data_dir)
  return cfg, restore_model(cfg, model_dir)


def _write_json(path: str, values: Dict) -> str:
  fileio.makedirs(os.path.dirname(path))
  with fileio.GFile(path, "w") as f:
    f.write(json.dumps(values, indent=2, sort_keys=True) + "\n")
  return path


def save_threshold(model_dir: str, threshold: float, quantile: float,
                   score: str = "latent_mean") -> str:
  """Writes `<model_dir>/threshold.json` ({"threshold", "quantile", "score"}); returns it."""
  return _write_json(os.path.join(model_dir, THRESHOLD_FILE), {
      "threshold": float(threshold), "quantile": float(quantile), "score": score})


def save_score_stats(model_dir: str, stats: Dict[str, Tuple[float, float]]) -> str:
  """Writes `<model_dir>/score_stats.json`: {score: [mean, std]} on normal frames."""
  return _write_json(os.path.join(model_dir, SCORE_STATS_FILE),
                     {name: [float(m), float(s)] for name, (m, s) in stats.items()})


def load_score_stats(model_dir: str) -> Dict[str, Tuple[float, float]]:
  """The normal-frame statistics of `score_stats.json`; DataError when there are none."""
  path = os.path.join(model_dir, SCORE_STATS_FILE)
  if not fileio.exists(path):
    raise errors.DataError(f"No {SCORE_STATS_FILE} in {model_dir!r}: run python -m "
                           f"daml_tf.calibrate --model_dir={model_dir} --score=<the fusion>.")
  with fileio.GFile(path) as f:
    return {name: (float(m), float(s)) for name, (m, s) in json.load(f).items()}


def save_motion_norm(model_dir: str, norm: motion_maps.MotionNorm) -> str:
  """Writes `<model_dir>/motion_norm.json` (a motion score's flow normalisation); returns it."""
  return _write_json(os.path.join(model_dir, MOTION_NORM_FILE), norm.to_dict())


def load_motion_norm(model_dir: str) -> Optional[motion_maps.MotionNorm]:
  """The normalisation of `<model_dir>/motion_norm.json`, or None if there is none."""
  path = os.path.join(model_dir, MOTION_NORM_FILE)
  if not fileio.exists(path):
    return None
  with fileio.GFile(path) as f:
    try:
      return motion_maps.MotionNorm.from_dict(json.load(f))
    except errors.DataError as error:
      raise errors.DataError(f"{path!r}: {error}") from None


def save_speedup_check(model_dir: str, values: Dict) -> str:
  """Writes `<model_dir>/speedup_check.json` (daml_tf.evaluation.speedup_check's result); returns it."""
  return _write_json(os.path.join(model_dir, SPEEDUP_CHECK_FILE), values)


def save_finetune_candidates(model_dir: str, values: Dict) -> str:
  """Writes `<model_dir>/finetune_candidates.json` (each candidate's speed-up check, the one
  kept); returns it."""
  return _write_json(os.path.join(model_dir, FINETUNE_CANDIDATES_FILE), values)


def load_speedup_check(model_dir: str) -> Optional[Dict]:
  """The contents of `<model_dir>/speedup_check.json`, or None if there is none."""
  path = os.path.join(model_dir, SPEEDUP_CHECK_FILE)
  if not fileio.exists(path):
    return None
  with fileio.GFile(path) as f:
    return json.load(f)


def load_threshold(model_dir: str) -> Optional[Dict[str, float]]:
  """The contents of `<model_dir>/threshold.json`, or None if there is none."""
  path = os.path.join(model_dir, THRESHOLD_FILE)
  if not fileio.exists(path):
    return None
  with fileio.GFile(path) as f:
    stored = json.load(f)
  if "threshold" not in stored:
    raise errors.DataError(f"{path!r} has no \"threshold\" entry.")
  return stored
