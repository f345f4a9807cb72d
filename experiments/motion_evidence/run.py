"""The motion-evidence study (RULE.md beside this file): every model, `latent_mean` and the
motion-weighted variants, micro / macro / online AUC and EER on a dataset's test split.

  .venv/bin/python -m experiments.motion_evidence.run \
      --model_dirs=runs/motion_evidence/ped2_cpu_s0,... --data_dir=~/datasets \
      --output=experiments/motion_evidence/results/auc.json

Each model's latent error maps are computed once (evaluation.VideoScorer, the paper's score);
each variant then weights them with the motion maps of one flow resolution, through the same
functions `evaluate` and `detect` use (scores.motion_weighted, data.motion_maps): the flow of
every test frame from the frame before at that fraction of the frames' stored resolution,
normalised per grid row by the 0.99 quantile over the calibration footage (what `calibrate`
fits: the training videos of the study's runs). The normalisation and the motion maps depend on the footage and the grid only, so they
are computed once per resolution for all models of one grid.
"""

import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from daml_tf import run_dir
from daml_tf import smoothing as smoothing_lib
from daml_tf.data import video_io
from daml_tf.evaluation import calibration
from daml_tf.evaluation import scoring as evaluation
from daml_tf.models import scores as scores_lib
from experiments.ped2_accuracy.score_ablation import metrics_row

FLAGS = flags.FLAGS
CANDIDATE = "a4@1"
# name -> (gain of 1 + gain * motion, None for the product; flow scale, "model" for the model's
# own input size).
VARIANTS = {
    "a4@1": (4.0, 1.0),
    "product@1": (None, 1.0),
    "a1@1": (1.0, 1.0),
    "a16@1": (16.0, 1.0),
    "a4@0.5": (4.0, 0.5),
    "product@0.5": (None, 0.5),
    "a4@0.25": (4.0, 0.25),
    "product@0.25": (None, 0.25),
    "a4@model": (4.0, "model"),
    "product@model": (None, "model"),
}


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  flags.DEFINE_list("model_dirs", None, "Training run directories (one grid).",
                    flag_values=flag_values)
  flags.DEFINE_string("data_dir", "", "Where the runs' dataset is (default: as trained).",
                      flag_values=flag_values)
  flags.DEFINE_list("variants", list(VARIANTS), "Variants to score.", flag_values=flag_values)
  flags.DEFINE_string("output", None, "The JSON file of results.", flag_values=flag_values)
  flags.mark_flags_as_required(["model_dirs", "output"], flag_values=flag_values)


def _scale(scale, cfg, frame_height: int) -> float:
  """A variant's flow scale: a number, or the model's input height over the frames'."""
  return cfg.data.image_height / frame_height if scale == "model" else float(scale)


class MotionCache:
  """Per flow scale: the normalisation fitted on the training videos and the normalised motion
  maps of every test video (both depend on the footage and the grid only)."""

  def __init__(self, cfg, model):
    self._model = model
    self._norms, self._maps = {}, {}
    # calibrate's footage: the held-out tails of the training videos, else (the study's runs,
    # --calibration_holdout=0) the training videos.
    self._training, _ = calibration.calibration_videos(cfg)

  def maps(self, scale: float, videos):
    key = round(scale, 6)
    if key not in self._maps:
      started = time.perf_counter()
      norm = calibration.fit_motion_norm(self._model, self._training, scale)
      self._norms[key] = norm.to_dict()
      self._maps[key] = [evaluation.motion_of(video, norm) for video in videos]
      logging.info("Flow at scale %.4g: fitted on %d pairs and mapped %d test videos in %.0f s",
                   scale, norm.pairs, len(videos), time.perf_counter() - started)
    return self._maps[key]

  def norms(self):
    return self._norms


def study_run(model_dir: str, data_dir: str, variants, cache=None):
  """{variant: metrics row} of one run; the cache is reused for runs of the same grid."""
  cfg, model = run_dir.restore_run(model_dir, data_dir)
  videos, labels = evaluation.test_split(cfg)
  frame_height = video_io.read_image(videos[0].frame_paths[0]).shape[0]
  cache = cache or MotionCache(cfg, model)
  scorer = evaluation.VideoScorer(model, cfg.data, cfg.eval.batch_size)
  indices, raw, maps, scored_labels = [], [], [], []
  for _, frame_indices, video_raw, video_labels, video_maps in evaluation.score_videos(
      scorer, videos, labels, cfg, model.background.numpy(), error_maps=True):
    indices.append(frame_indices)
    raw.append(video_raw.astype(np.float64))
    maps.append(video_maps)
    scored_labels.append(video_labels[frame_indices])
  none = smoothing_lib.parse("none")
  rows = {"latent_mean": metrics_row(raw, scored_labels, none)}
  for name in variants:
    gain, scale = VARIANTS[name]
    motion = cache.maps(_scale(scale, cfg, frame_height), videos)
    weigh = scores_lib.motion_weighted(gain)
    weighted = [weigh(error_maps, video_motion[frame_indices])[0].numpy().astype(np.float64)
                for error_maps, video_motion, frame_indices in zip(maps, motion, indices)]
    rows[name] = metrics_row(weighted, scored_labels, none)
    logging.info("%s %s: %s", model_dir, name, rows[name])
  return rows, cache


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  unknown = [name for name in FLAGS.variants if name not in VARIANTS]
  if unknown:
    raise app.UsageError(f"Unknown variants {unknown}; known: {list(VARIANTS)}")
  results, cache = {}, None
  for model_dir in FLAGS.model_dirs:
    results[os.path.basename(model_dir.rstrip("/"))], cache = study_run(
        model_dir, FLAGS.data_dir, FLAGS.variants, cache)
  with open(FLAGS.output, "w") as f:
    json.dump({"candidate": CANDIDATE, "variants": {n: VARIANTS[n] for n in FLAGS.variants},
               "runs": results, "norms": cache.norms() if cache else {}}, f, indent=1)
  logging.info("Wrote %s", FLAGS.output)


if __name__ == "__main__":
  define_flags()
  app.run(main)
