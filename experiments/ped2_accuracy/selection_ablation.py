"""Does the speed-up check choose good runs? Its agreement with the test AUC over runs of one
recipe, and what keeping the best of n runs by it gains.

    .venv/bin/python -m experiments.ped2_accuracy.selection_ablation --data_dir=~/datasets \
        --model_dirs=<runs of one recipe, differing in seed> --output=selection.json

For each run: the speed-up check at 2x and 3x (daml_tf.evaluation.speedup_check, on the run's training
footage; recomputed, and not written to the run) and the test micro AUC (per-video min-max) and
online AUC (raw scores pooled) of the paper's score (experiments.ped2_accuracy.score_ablation). Then, over the
runs: the Spearman correlation of each check with each AUC, and for n = 2, 3, 5 the mean over
every n-subset of runs of (the AUC of the subset's best run by the check - the subset's mean
AUC): what "train n seeds, keep the best by the check" gains over one seed, on average.
The test labels only judge the check; the check itself never sees them.
"""

import itertools
import json
import os

from absl import app
from absl import flags
from absl import logging
import numpy as np
from scipy import stats

from daml_tf.evaluation import calibration
from daml_tf import run_dir
from experiments.ped2_accuracy import score_ablation
from daml_tf.evaluation import speedup_check

FLAGS = flags.FLAGS
SPEEDUPS = (2, 3)
SUBSET_SIZES = (2, 3, 5)


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  flags.DEFINE_list("model_dirs", None, "Training runs of one recipe.", flag_values=flag_values)
  flags.DEFINE_string("data_dir", "", "Where the runs' dataset is (default: as trained).",
                      flag_values=flag_values)
  flags.DEFINE_string("output", None, "The JSON file of results.", flag_values=flag_values)
  flags.mark_flags_as_required(["model_dirs", "output"], flag_values=flag_values)


def best_of_n_gain(check: np.ndarray, auc: np.ndarray, n: int) -> float:
  """Mean over all n-subsets of runs of (AUC of the subset's highest-check run - the subset's
  mean AUC); on a tie of the check the earlier run is kept."""
  check, auc = np.asarray(check, np.float64), np.asarray(auc, np.float64)
  gains = []
  for subset in itertools.combinations(range(len(check)), n):
    subset = list(subset)
    picked = subset[int(np.argmax(check[subset]))]
    gains.append(auc[picked] - auc[subset].mean())
  return float(np.mean(gains))


def run_row(model_dir: str, data_dir: str) -> dict:
  """The checks and test AUCs of one run."""
  cfg, model = run_dir.restore_run(model_dir, data_dir)
  training_videos, holdout_videos = calibration.training_and_holdout(cfg)
  row = {}
  for speedup in SPEEDUPS:
    # Not written to the run's speedup_check.json: that file keeps the configured check.
    result = speedup_check.check_footage(model, cfg, training_videos, holdout_videos,
                                         speedup=speedup)
    row[f"speedup{speedup}_auc"] = round(result.auc, 5)
  metrics = score_ablation.ablate_run(model_dir, data_dir, ["latent_mean"], ["none"])
  row["micro_auc"] = metrics["latent_mean|none"]["micro_auc"]
  row["online_auc"] = metrics["latent_mean|none"]["online_auc"]
  return row


def summarise(rows: dict) -> dict:
  """Spearman correlations and best-of-n gains of every check, over the runs of `rows`."""
  summary = {}
  for check_name in [f"speedup{s}_auc" for s in SPEEDUPS]:
    check = np.array([row[check_name] for row in rows.values()])
    for metric in ("micro_auc", "online_auc"):
      auc = np.array([row[metric] for row in rows.values()])
      rho, p_value = stats.spearmanr(check, auc)
      summary[f"{check_name}|{metric}|spearman"] = round(float(rho), 3)
      summary[f"{check_name}|{metric}|spearman_p"] = round(float(p_value), 4)
      for n in SUBSET_SIZES:
        if n < len(rows):
          summary[f"{check_name}|{metric}|best_of_{n}_gain"] = round(
              best_of_n_gain(check, auc, n), 4)
  return summary


def main(argv):
  del argv
  rows = {}
  for model_dir in FLAGS.model_dirs:
    rows[model_dir] = run_row(os.path.expanduser(model_dir), os.path.expanduser(FLAGS.data_dir))
    logging.info("%s: %s", model_dir, rows[model_dir])
  result = {"runs": rows, "summary": summarise(rows)}
  for key, value in result["summary"].items():
    print(key, value, flush=True)
  with open(FLAGS.output, "w") as f:
    json.dump(result, f, indent=1, sort_keys=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
