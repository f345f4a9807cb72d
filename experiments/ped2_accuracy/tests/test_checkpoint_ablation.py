"""experiments/ped2_accuracy/checkpoint_ablation.py: its checkpoint listing, and its scores of a short run's last
checkpoint against that run's evaluation."""

import os

import numpy as np

from daml_tf.evaluation import scoring as evaluation
from experiments.ped2_accuracy import score_ablation
from daml_tf.data import layout

from experiments.ped2_accuracy import checkpoint_ablation


def test_checkpoints_of_sorts_by_step_not_by_name(tmp_path):
  folder = tmp_path / "checkpoints"
  folder.mkdir()
  for step in (1000, 200, 30):
    (folder / f"ckpt-{step}.index").write_text("")
    (folder / f"ckpt-{step}.data-00000-of-00001").write_text("")
  found = checkpoint_ablation.checkpoints_of(str(tmp_path))
  assert [step for step, _ in found] == [30, 200, 1000]
  assert found[0][1] == str(folder / "ckpt-30")


def test_last_checkpoint_own_scores_are_the_runs_evaluation(trained):
  cfg, _ = trained
  model_dir = cfg.train.model_dir
  step, prefix = checkpoint_ablation.checkpoints_of(model_dir)[-1]
  _, train_videos = layout.find_videos(cfg.data.dataset, cfg.data.data_dir, "training")
  test_videos, labels = evaluation.test_split(cfg)
  rows = checkpoint_ablation.score_checkpoint(cfg, prefix, train_videos, test_videos, labels,
                                              fresh=True)
  assert set(rows) == {"own|latent_mean", "own|latent_top5", "fresh|latent_mean",
                       "fresh|latent_top5"}
  # The run's own scores, as daml_tf.evaluate computes them (score_ablation's rows).
  expected = score_ablation.ablate_run(model_dir, "", ["latent_mean"], ["none"])
  assert step == int(os.path.basename(prefix).split("-")[1])
  np.testing.assert_allclose(rows["own|latent_mean"]["micro_auc"],
                             expected["latent_mean|none"]["micro_auc"], atol=1e-4)
