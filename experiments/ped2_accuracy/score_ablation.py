"""Every registered score and several smoothings of trained runs, on their test split.

`python -m experiments.ped2_accuracy.score_ablation --model_dirs=runs/a,runs/b --data_dir=~/datasets
 [--scores=latent_mean,latent_top5] [--smoothings=none,ma:5,ema:0.3,gauss:3] --output=abl.json`

For each run, score and smoothing: micro and macro AUC and EER with the paper's per-video
min-max normalisation and, for causal smoothings, the online micro AUC (raw scores pooled);
for each score, the mean raw score of the normal test frames.
The fusion scores are standardised by their parts' statistics on the run's calibration frames
(held-out tails, else training frames), as `daml_tf.calibrate` computes them. Scoring runs once
per run and score; smoothing and metrics are host-side NumPy on the collected scores.
"""

import json

from absl import app
from absl import flags
from absl import logging
import numpy as np

from daml_tf.evaluation import calibration
from daml_tf import cli
from daml_tf.evaluation import scoring as evaluation
from daml_tf import metrics as metrics_lib
from daml_tf import run_dir
from daml_tf import smoothing as smoothing_lib
from daml_tf.models import scores as scores_lib

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  flags.DEFINE_list("model_dirs", None, "Training run directories.", flag_values=flag_values)
  flags.DEFINE_string("data_dir", "", "Where the runs' dataset is (default: as trained).",
                      flag_values=flag_values)
  flags.DEFINE_list("scores", list(scores_lib.SCORES), "Scores to compute.",
                    flag_values=flag_values)
  flags.DEFINE_list("smoothings", ["none", "ma:5", "ema:0.3", "gauss:3"], "Smoothing specs.",
                    flag_values=flag_values)
  flags.DEFINE_string("output", None, "The JSON file of results.", flag_values=flag_values)
  flags.mark_flags_as_required(["model_dirs", "output"], flag_values=flag_values)


def metrics_row(raw_per_video, labels_per_video, smoothing: smoothing_lib.Smoothing):
  """{micro, macro, eer[, online]} of one score under one smoothing."""
  smoothed = [smoothing_lib.smooth(raw, smoothing) for raw in raw_per_video]
  row = metrics_lib.evaluate_scores(smoothed, labels_per_video, "per_video")
  row = {name: round(float(row[name]), 4) for name in ("micro_auc", "macro_auc", "eer")}
  if smoothing.causal:
    row["online_auc"] = round(float(metrics_lib.micro_auc(smoothed, labels_per_video)), 4)
  return row


def ablate_run(model_dir: str, data_dir: str, score_names, smoothings):
  """{"score|smoothing": metrics row} of one run, plus its normal frames' mean score."""
  cfg, model = run_dir.restore_run(model_dir, data_dir)
  background = model.background.numpy()
  videos, labels = evaluation.test_split(cfg)
  calibration_videos, _ = calibration.calibration_videos(cfg)
  rows = {}
  for name in score_names:
    stats = (calibration.part_statistics(model, cfg, calibration_videos, name)
             if scores_lib.get_score(name).parts else None)
    scorer = evaluation.VideoScorer(model, cfg.data, cfg.eval.batch_size, name, stats)
    raw, scored_labels = [], []
    for _, frame_indices, video_raw, video_labels, _ in evaluation.score_videos(
        scorer, videos, labels, cfg, background):
      raw.append(video_raw.astype(np.float64))
      scored_labels.append(video_labels[frame_indices])
    for spec in smoothings:
      rows[f"{name}|{spec}"] = metrics_row(raw, scored_labels, smoothing_lib.parse(spec))
    # How high the score sits on normal test frames: what pseudo-anomaly training must not raise.
    rows[f"{name}|normal_mean"] = round(float(np.mean(np.concatenate(
        [r[l == 0] for r, l in zip(raw, scored_labels)]))), 5)
    logging.info("%s %s: %s", model_dir, name, rows[f"{name}|{smoothings[0]}"])
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  results = {}
  for model_dir in FLAGS.model_dirs:
    results[model_dir] = cli.exit_on_expected_errors(
        ablate_run, model_dir, FLAGS.data_dir, FLAGS.scores, FLAGS.smoothings)
  with open(FLAGS.output, "w") as f:
    json.dump(results, f, indent=1, sort_keys=True)
  logging.info("Wrote %s", FLAGS.output)
  cli.finish()


if __name__ == "__main__":
  define_flags()
  app.run(main)
