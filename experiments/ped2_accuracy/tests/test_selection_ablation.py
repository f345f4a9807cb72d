"""experiments/ped2_accuracy/selection_ablation.py: the best-of-n gain against hand-computed values, and its rows of
a short run."""

import os

import pytest

from daml_tf import run_dir
from experiments.ped2_accuracy import score_ablation

from experiments.ped2_accuracy import selection_ablation

CHECK = [0.90, 0.80, 0.95]
AUC = [0.90, 0.88, 0.85]


def test_best_of_two_against_hand_computed_pairs():
  # {0, 1}: picks 0, 0.90 - 0.89 = +0.010; {0, 2}: picks 2, 0.85 - 0.875 = -0.025;
  # {1, 2}: picks 2, 0.85 - 0.865 = -0.015. Mean -0.010.
  assert selection_ablation.best_of_n_gain(CHECK, AUC, 2) == pytest.approx(-0.010)


def test_best_of_all_runs_is_the_picks_distance_from_the_mean():
  assert selection_ablation.best_of_n_gain(CHECK, AUC, 3) == pytest.approx(0.85 - 2.63 / 3)


def test_a_check_that_orders_like_the_auc_gains_and_a_reversed_one_loses():
  auc = [0.80, 0.85, 0.90, 0.95]
  assert selection_ablation.best_of_n_gain(auc, auc, 2) > 0
  assert selection_ablation.best_of_n_gain([-a for a in auc], auc, 2) < 0


def test_run_row_matches_the_stored_check_and_score_ablation(trained):
  cfg, _ = trained
  model_dir = cfg.train.model_dir
  row = selection_ablation.run_row(model_dir, "")
  assert set(row) == {"speedup2_auc", "speedup3_auc", "micro_auc", "online_auc"}
  # The run's own file (the 2x check written after training) is left as it was.
  stored = run_dir.load_speedup_check(model_dir)
  assert stored["speedup"] == 2
  assert row["speedup2_auc"] == pytest.approx(stored["auc"], abs=1e-5)
  metrics = score_ablation.ablate_run(model_dir, "", ["latent_mean"], ["none"])
  assert row["micro_auc"] == metrics["latent_mean|none"]["micro_auc"]
  worse = dict(row, micro_auc=row["micro_auc"] - 0.1, online_auc=row["online_auc"] - 0.1,
               speedup2_auc=row["speedup2_auc"] - 0.1, speedup3_auc=row["speedup3_auc"] - 0.1)
  summary = selection_ablation.summarise({"a": row, "b": worse})
  assert summary["speedup2_auc|micro_auc|spearman"] == pytest.approx(1.0)
