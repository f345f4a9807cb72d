"""Alarm thresholds: calibration at the end of training on the held-out tails, the CLI."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import testing
from daml_tf.evaluation import calibration
from daml_tf.evaluation import scoring as evaluation
from daml_tf import run_dir
from daml_tf import train as train_command
from daml_tf.data import pipeline
from daml_tf.data import synthetic

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("synthetic"))
  synthetic.generate(data_dir, num_train_videos=2, num_test_videos=1, frames_per_video=30,
                     seed=0)
  model_dir = str(tmp_path_factory.mktemp("model"))
  cfg = testing.tiny_config(data_dir, model_dir, data=dict(clips_per_epoch=4), train_epochs=1,
                            finetune_epochs=0, image_summary_steps=0, export=False,
                            calibration_holdout=0.2, calibration_quantile=0.9)
  train_command.run(cfg)
  return cfg


def _holdout_scores(cfg):
  videos, held_out = calibration.calibration_videos(cfg)
  assert held_out
  model = run_dir.restore_model(cfg)
  scorer = evaluation.VideoScorer(model, cfg.data, batch_size=8)
  background = model.background.numpy()
  return np.concatenate([
      scorer.score(pipeline.load_video(v, cfg.data.image_size, cfg.data.channels,
                                       background))[1] for v in videos])


def test_training_calibrates_on_the_held_out_tails(calibrated_run):
  with open(os.path.join(calibrated_run.train.model_dir, "threshold.json")) as f:
    stored = json.load(f)
  scores = _holdout_scores(calibrated_run)
  # 30-frame videos: 6 frames held out of each, 3 of them scorable (clip span 3).
  assert scores.size == 2 * 3
  assert stored["quantile"] == 0.9
  np.testing.assert_allclose(stored["threshold"], np.quantile(scores, 0.9), rtol=1e-6)


def test_calibrate_cli_recomputes_with_another_quantile(calibrated_run):
  result = subprocess.run(
      [sys.executable, "-m", "daml_tf.calibrate", f"--model_dir={calibrated_run.train.model_dir}",
       "--quantile=1.0"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(calibrated_run.train.model_dir, "threshold.json")) as f:
    stored = json.load(f)
  assert stored["quantile"] == 1.0
  np.testing.assert_allclose(stored["threshold"], _holdout_scores(calibrated_run).max(), rtol=1e-6)


def test_calibrate_cli_on_a_folder_without_a_model_says_so(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "daml_tf.calibrate", f"--model_dir={tmp_path}"], cwd=REPO,
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert "config.json" in result.stderr
  assert "Traceback" not in result.stderr
