"""The study's scorer gives the numbers of the commands a user runs: `calibrate
--score=motion_weighted` then `evaluate --score=motion_weighted`, on a short trained run."""

import dataclasses
import shutil

import pytest

from daml_tf import run_dir
from daml_tf.evaluation import calibration
from daml_tf.evaluation import scoring
from experiments.motion_evidence import run as study


def test_the_candidate_row_is_what_calibrate_and_evaluate_give(trained, tmp_path):
  cfg, _ = trained
  model_dir = str(tmp_path / "run")
  shutil.copytree(cfg.train.model_dir, model_dir)
  calibration.calibrate_model_dir(model_dir, score="motion_weighted")
  rows, cache = study.study_run(model_dir, "", [study.CANDIDATE, "product@0.5"])
  assert set(rows) == {"latent_mean", study.CANDIDATE, "product@0.5"}
  # The norm the study fitted is the one calibrate stored (same footage, same grid).
  assert cache.norms()[1.0] == run_dir.load_motion_norm(model_dir).to_dict()
  run_cfg = run_dir.load_config(model_dir)
  for normalize, key in (("per_video", "micro_auc"), ("none", "micro_auc")):
    eval_cfg = run_cfg.replace(train=dataclasses.replace(run_cfg.train, model_dir=model_dir),
                               eval=dataclasses.replace(
        run_cfg.eval, score="motion_weighted", normalize=normalize, plots=False,
        output_dir=str(tmp_path / normalize)))
    metrics = scoring.evaluate(eval_cfg)
    row = rows[study.CANDIDATE]
    expected = row["micro_auc"] if normalize == "per_video" else row["online_auc"]
    assert metrics[key] == pytest.approx(expected, abs=1e-4)
