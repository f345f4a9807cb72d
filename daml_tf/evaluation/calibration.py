"""Alarm thresholds from normal footage the model did not train on.

A threshold is a high quantile of the raw scores of normal frames (`calibrate_threshold`).
Taken on the training frames it is too low, because the model predicts its own training
footage better than new normal footage, and raises false alarms. So training
can hold out the last frames of every training video (`--calibration_holdout`), calibrate on
them at the end (`calibrate_after_training`), and `python -m daml_tf.calibrate` recomputes the
threshold later on the same held-out frames or on any folder of normal videos.
"""

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np

from daml_tf import config as config_lib
from daml_tf import errors
from daml_tf.evaluation import scoring as evaluation
from daml_tf import run_dir
from daml_tf.data import layout
from daml_tf.data import motion_maps
from daml_tf.data import pipeline
from daml_tf.models import DAML
from daml_tf.models import scores as scores_lib


def normal_scores(model: DAML, data_cfg: config_lib.DataConfig,
                  videos: Sequence[layout.Video], batch_size: int = 32,
                  score: str = scores_lib.DEFAULT_SCORE,
                  score_stats: Optional[Mapping[str, Tuple[float, float]]] = None,
                  motion_norm: Optional[motion_maps.MotionNorm] = None) -> np.ndarray:
  """The raw scores of every predictable frame of `videos`, pooled."""
  scorer = evaluation.VideoScorer(model, data_cfg, batch_size, score, score_stats, motion_norm)
  background = model.background.numpy()
  values = []
  for video in videos:
    frames = pipeline.load_video(video, data_cfg.image_size, data_cfg.channels, background)
    values.append(scorer.score(frames, scorer.motion_of(video))[1])
  values = np.concatenate(values) if values else np.zeros([0], np.float32)
  if not values.size:
    raise ValueError(f"No frame of the {len(videos)} calibration video(s) could be scored "
                     f"(each needs more than {data_cfg.clip_span} frames).")
  return values


def part_statistics(model: DAML, cfg: config_lib.Config, videos: Sequence[layout.Video],
                    score: str) -> Dict[str, Tuple[float, float]]:
  """{part: (mean, std)} of a fusion score's parts on normal `videos`: what standardises them."""
  stats = {}
  for part in scores_lib.get_score(score).parts:
    values = normal_scores(model, cfg.data, videos, cfg.eval.batch_size, part)
    stats[part] = (float(values.mean()), float(values.std()))
  return stats


def fit_motion_norm(model: DAML, videos: Sequence[layout.Video], flow_scale: float,
                    quantile: float = motion_maps.DEFAULT_QUANTILE) -> motion_maps.MotionNorm:
  """The flow normalisation of a score of motion evidence, fitted on normal `videos` read at
  their own resolution (data.motion_maps.fit_norm), for the model's latent grid."""
  grid = tuple(int(d) for d in model.code_shape[:2])
  speeds = [evaluation.video_speed(video, grid, flow_scale) for video in videos]
  return motion_maps.fit_norm(speeds, flow_scale, quantile)


def calibrate_threshold(model: DAML, data_cfg: config_lib.DataConfig,
                        videos: Sequence[layout.Video], quantile: float = 0.995,
                        batch_size: int = 32, score: str = scores_lib.DEFAULT_SCORE,
                        score_stats: Optional[Mapping[str, Tuple[float, float]]] = None,
                        motion_norm: Optional[motion_maps.MotionNorm] = None) -> float:
  """A threshold: the `quantile` of the raw scores of normal videos.

  The videos should be normal footage of the camera the model watches, ideally held out from
  training: on its own training videos the model predicts better than on new normal footage,
  so a threshold taken there is lower and raises more false alarms. The training videos are
  still a usable fallback (with a higher quantile) when nothing else is available.

  Args:
    model: the restored model (its background is used).
    data_cfg: its DataConfig.
    videos: normal videos in the frames layout (e.g. `layout.find_videos(dataset, data_dir,
      "training")[1]`).
    quantile: in (0, 1]; the share of normal frames that stay below the threshold.
    batch_size: frames encoded at once.
    score: the score the threshold is for.
    score_stats: a fusion score's part statistics.
    motion_norm: a motion score's flow normalisation.

  Returns:
    The threshold on raw (unsmoothed) scores.

  Raises:
    ValueError: quantile out of range, or no video long enough to score a frame.
  """
  if not 0 < quantile <= 1:
    raise ValueError(f"quantile must be in (0, 1], got {quantile}.")
  scores = normal_scores(model, data_cfg, videos, batch_size, score, score_stats, motion_norm)
  threshold = float(np.quantile(scores.astype(np.float64), quantile))
  logging.info("Threshold %.6g: quantile %s of %d normal frame scores (%d videos)", threshold,
               quantile, scores.size, len(videos))
  return threshold


def calibration_videos(cfg: config_lib.Config, data_dir: Optional[str] = None
                       ) -> Tuple[List[layout.Video], bool]:
  """The videos a run's threshold is calibrated on: its held-out tails, else its training
  videos. Returns (videos, held_out)."""
  heads, tails = training_and_holdout(cfg, data_dir)
  return (tails, True) if tails else (heads, False)


def training_and_holdout(cfg: config_lib.Config, data_dir: Optional[str] = None
                         ) -> Tuple[List[layout.Video], List[layout.Video]]:
  """(the training videos without their held-out tails, the tails) as the run split them."""
  _, videos = layout.find_videos(cfg.data.dataset, data_dir or cfg.data.data_dir, "training")
  return layout.split_holdout(videos, cfg.train.calibration_holdout, cfg.data.clip_span)


def calibrate_and_save(model: DAML, cfg: config_lib.Config, videos: Sequence[layout.Video],
                       held_out: bool, output_dir: str,
                       quantile: Optional[float] = None) -> float:
  """Computes the threshold on `videos` and writes `<output_dir>/threshold.json`."""
  quantile = cfg.train.calibration_quantile if quantile is None else quantile
  if not held_out:
    logging.warning("Calibrating on frames the model trained on: expect a threshold on the low "
                    "side (more false alarms). Hold out footage with --calibration_holdout or "
                    "calibrate on other normal videos with python -m daml_tf.calibrate "
                    "--videos_dir=...")
  score = scores_lib.get_score(cfg.eval.score)
  try:
    stats, norm = None, None
    if score.parts:
      stats = part_statistics(model, cfg, videos, score.name)
      logging.info("Normal-frame statistics of %s: %s written to %s", score.name, stats,
                   run_dir.save_score_stats(output_dir, stats))
    if score.needs_motion:
      # Fitted on the same normal footage as the threshold, so the two agree.
      norm = fit_motion_norm(model, videos, cfg.eval.flow_scale)
      logging.info("Optical flow normalisation of %s (flow at %g of the input's resolution, "
                   "%d frame pairs) written to %s", score.name, norm.scale, norm.pairs,
                   run_dir.save_motion_norm(output_dir, norm))
    threshold = calibrate_threshold(model, cfg.data, videos, quantile=quantile,
                                    batch_size=cfg.eval.batch_size, score=score.name,
                                    score_stats=stats, motion_norm=norm)
  except ValueError as error:  # Too-short videos or a bad quantile: a data/flag problem.
    raise errors.DataError(str(error)) from None
  path = run_dir.save_threshold(output_dir, threshold, quantile, score.name)
  logging.info("Alarm threshold %.6g written to %s", threshold, path)
  return threshold


def calibrate_after_training(cfg: config_lib.Config, model: DAML,
                             training_videos: Sequence[layout.Video],
                             holdout_videos: Sequence[layout.Video]) -> Optional[float]:
  """The end-of-training calibration: on the held-out tails, else on the training videos."""
  videos, held_out = (holdout_videos, True) if holdout_videos else (training_videos, False)
  if not videos:
    logging.info("No frames-layout videos to calibrate on (TFRecord training): run python -m "
                 "daml_tf.calibrate --model_dir=%s --videos_dir=<normal footage>.",
                 cfg.train.model_dir)
    return None
  return calibrate_and_save(model, cfg, videos, held_out, cfg.train.model_dir)


def calibrate_model_dir(model_dir: str, videos_dir: str = "", data_dir: str = "",
                        quantile: Optional[float] = None, score: str = "",
                        flow_scale: Optional[float] = None) -> float:
  """Calibrates a trained run and writes `<model_dir>/threshold.json`.

  Args:
    model_dir: the training run's directory.
    videos_dir: normal footage the model did not train on, in the frames layout
      (`<videos_dir>/training/frames/<video>/<frame>`); default: the run's held-out training
      tails (or its training videos when it held nothing out).
    data_dir: overrides the dataset location saved in the run's config.
    quantile: overrides the run's --calibration_quantile.
    score: overrides the run's --score (the threshold records which score it is for).
    flow_scale: overrides the run's --flow_scale (a score of motion evidence).

  Returns:
    The threshold.
  """
  cfg = run_dir.load_config(model_dir)
  if score:
    cfg = cfg.replace(eval=dataclasses.replace(cfg.eval, score=score))
  if flow_scale is not None:
    cfg = cfg.replace(eval=dataclasses.replace(cfg.eval, flow_scale=flow_scale))
  if videos_dir:
    _, videos = layout.find_videos(cfg.data.dataset, videos_dir, "training")
    held_out = True
  else:
    videos, held_out = calibration_videos(cfg, data_dir)
  model = run_dir.restore_model(cfg, model_dir)
  return calibrate_and_save(model, cfg, videos, held_out, model_dir, quantile)
