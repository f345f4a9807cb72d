"""Alarm thresholds from normal footage the model did not train on.

A threshold is a high quantile of the raw scores of normal frames (`streaming.
calibrate_threshold`). Taken on the training frames it is too low, because the model predicts
its own training footage better than new normal footage, and raises false alarms. So training
can hold out the last frames of every training video (`--calibration_holdout`), calibrate on
them at the end (`calibrate_after_training`), and `python -m daml_tf.calibrate` recomputes the
threshold later on the same held-out frames or on any folder of normal videos.
"""

import math
from typing import List, Optional, Sequence, Tuple

from absl import logging

from daml_tf import config as config_lib
from daml_tf import streaming
from daml_tf import training
from daml_tf.data import layout
from daml_tf.data import registry
from daml_tf.models import DAML


def split_holdout(videos: Sequence[layout.Video], fraction: float, clip_span: int
                  ) -> Tuple[List[layout.Video], List[layout.Video]]:
  """Splits every video into a training head and a held-out tail of about `fraction`.

  A tail must hold at least one scorable clip (clip_span + 1 frames) and the head must keep
  one too; a video too short for both stays whole in training.

  Args:
    videos: the training videos.
    fraction: share of each video's frames to hold out, in [0, 1).
    clip_span: frames from a clip's first input to its target.

  Returns:
    (training videos, held-out videos); the held-out list is empty when fraction is 0. Held-out
    tails are named "<video>:holdout".
  """
  if not fraction:
    return list(videos), []
  heads, tails = [], []
  minimum = clip_span + 1
  for video in videos:
    held = max(math.ceil(fraction * video.num_frames), minimum)
    if video.num_frames - held < minimum:
      heads.append(video)
      continue
    cut = video.num_frames - held
    heads.append(layout.Video(video.name, video.frame_paths[:cut]))
    tails.append(layout.Video(f"{video.name}:holdout", video.frame_paths[cut:]))
  if not tails:
    logging.warning("No training video is long enough to hold out %.0f%% of it (each needs "
                    "2 x %d frames); the threshold will come from training frames.",
                    100 * fraction, minimum)
  else:
    logging.info("Holding out %d of %d training frames (the end of %d videos) for threshold "
                 "calibration.", sum(v.num_frames for v in tails),
                 sum(v.num_frames for v in videos), len(tails))
  return heads, tails


def calibration_videos(cfg: config_lib.Config, data_dir: Optional[str] = None
                       ) -> Tuple[List[layout.Video], bool]:
  """The videos a run's threshold is calibrated on: its held-out tails, else its training
  videos. Returns (videos, held_out)."""
  spec = registry.get_spec(cfg.data.dataset)
  root = layout.resolve_dataset_root(data_dir or cfg.data.data_dir, spec)
  videos = layout.list_videos(root, "training", spec)
  heads, tails = split_holdout(videos, cfg.train.calibration_holdout, cfg.data.clip_span)
  return (tails, True) if tails else (heads, False)


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
  try:
    threshold = streaming.calibrate_threshold(model, cfg.data, videos, quantile=quantile,
                                              batch_size=cfg.eval.batch_size)
  except ValueError as error:  # Too-short videos or a bad quantile: a data/flag problem.
    raise layout.DataError(str(error)) from None
  path = streaming.save_threshold(output_dir, threshold, quantile)
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
                        quantile: Optional[float] = None) -> float:
  """Calibrates a trained run and writes `<model_dir>/threshold.json`.

  Args:
    model_dir: the training run's directory.
    videos_dir: normal footage the model did not train on, in the frames layout
      (`<videos_dir>/training/frames/<video>/<frame>`); default: the run's held-out training
      tails (or its training videos when it held nothing out).
    data_dir: overrides the dataset location saved in the run's config.
    quantile: overrides the run's --calibration_quantile.

  Returns:
    The threshold.
  """
  cfg = streaming.load_run_config(model_dir)
  if videos_dir:
    spec = registry.get_spec(cfg.data.dataset)
    videos = layout.list_videos(layout.resolve_dataset_root(videos_dir, spec), "training", spec)
    held_out = True
  else:
    videos, held_out = calibration_videos(cfg, data_dir)
  model = training.restore_model(cfg, model_dir)
  return calibrate_and_save(model, cfg, videos, held_out, model_dir, quantile)
