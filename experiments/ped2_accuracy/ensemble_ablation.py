"""Ensembles of trained runs on their test split: does averaging models lift the AUC?

    .venv/bin/python -m experiments.ped2_accuracy.ensemble_ablation --data_dir=~/datasets \
        --ensembles=runs/a+runs/b+runs/c,runs/a --output=experiments/ped2_accuracy/results/ensembles.json

Each member's raw latent_mean scores are standardised by the mean and spread of its own scores
on its calibration frames (held-out tails, else training frames; never test statistics), then
averaged over the members on the frames every member scores. Reported per ensemble: micro AUC
with the paper's per-video min-max and the online micro AUC of the raw averages pooled.
A script, not a package feature: ensembles were measured and not adopted (README, "Accuracy
levers on UCSD Ped2").
"""

import json
import os

from absl import app
from absl import flags
import numpy as np

from daml_tf.evaluation import calibration
from daml_tf.evaluation import scoring as evaluation
from daml_tf import metrics as metrics_lib
from daml_tf import run_dir

FLAGS = flags.FLAGS
flags.DEFINE_list("ensembles", None, "Ensembles, members joined by '+'.")
flags.DEFINE_string("data_dir", "", "Where the runs' dataset is (default: as trained).")
flags.DEFINE_string("output", None, "JSON file of results.")


def member_scores(model_dir: str, data_dir: str):
  """({video: (scored frame indices, standardised scores, labels of those frames)})."""
  cfg, model = run_dir.restore_run(model_dir, data_dir)
  calibration_videos, _ = calibration.calibration_videos(cfg)
  normal = calibration.normal_scores(model, cfg.data, calibration_videos, cfg.eval.batch_size)
  scorer = evaluation.VideoScorer(model, cfg.data, cfg.eval.batch_size)
  videos, labels = evaluation.test_split(cfg)
  result = {}
  for video, indices, raw, video_labels, _ in evaluation.score_videos(
      scorer, videos, labels, cfg, model.background.numpy()):
    standardised = (raw.astype(np.float64) - normal.mean()) / normal.std()
    result[video.name] = (indices, standardised, video_labels[indices])
  return result


def ensemble_metrics(members):
  """Micro (per-video min-max) and online AUC of the members' averaged scores."""
  averaged, labels = [], []
  for name in members[0]:
    common = members[0][name][0]
    for member in members[1:]:
      common = np.intersect1d(common, member[name][0])
    averaged.append(np.mean([m[name][1][np.isin(m[name][0], common)] for m in members], 0))
    labels.append(members[0][name][2][np.isin(members[0][name][0], common)])
  micro = metrics_lib.evaluate_scores(averaged, labels, "per_video")["micro_auc"]
  online = metrics_lib.micro_auc(averaged, labels)
  return {"micro_auc": round(float(micro), 4), "online_auc": round(float(online), 4)}


def main(argv):
  del argv
  cache = {}
  results = {}
  for ensemble in FLAGS.ensembles:
    dirs = ensemble.split("+")
    for model_dir in dirs:
      if model_dir not in cache:
        cache[model_dir] = member_scores(os.path.expanduser(model_dir),
                                         os.path.expanduser(FLAGS.data_dir))
    results[ensemble] = ensemble_metrics([cache[d] for d in dirs])
    print(ensemble, results[ensemble], flush=True)
  with open(FLAGS.output, "w") as f:
    json.dump(results, f, indent=2)


if __name__ == "__main__":
  flags.mark_flags_as_required(["ensembles", "output"])
  app.run(main)
