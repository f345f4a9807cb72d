"""The speed-up check (daml_tf.evaluation.speedup_check) and the ranking command built on it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import testing
from daml_tf.evaluation import calibration
from daml_tf import errors
from daml_tf import rank_runs
from daml_tf import run_dir
from daml_tf.evaluation import speedup_check
from daml_tf.data import layout
from daml_tf.data import pipeline


def test_sped_up_geometry_is_the_pseudo_anomaly_samplers():
  data_cfg = testing.tiny_config(data=dict(interval=2, delta=3)).data
  fast = speedup_check.sped_up(data_cfg, 2)
  assert (fast.time_steps, fast.interval, fast.delta) == (data_cfg.time_steps, 4, 6)
  expected = pipeline.pseudo_anomaly_clip_indices(40, data_cfg.time_steps, 2, 3, speeds=[2])
  np.testing.assert_array_equal(
      pipeline.clip_indices(40, fast.time_steps, fast.interval, fast.delta), expected)
  # k=3: inputs 0, 4, 8, target 14.
  np.testing.assert_array_equal(expected[0], [0, 4, 8, 14])
  with pytest.raises(ValueError, match="speedup"):
    speedup_check.sped_up(data_cfg, 1)


@pytest.mark.parametrize("normal, fast, expected", [
    ([1, 2, 3], [2.5, 4], 5 / 6),  # 2.5 beats 1 and 2 but not 3; 4 beats all: 5 of 6 pairs.
    ([1, 2], [2, 3], 3.5 / 4),  # The tie 2 = 2 counts half.
    ([5, 6], [1, 2], 0.0),
])
def test_separation_auc_against_hand_counted_pairs(normal, fast, expected):
  assert speedup_check.separation_auc(np.array(normal), np.array(fast)) == pytest.approx(expected)


def test_separation_auc_needs_both_kinds():
  with pytest.raises(ValueError):
    speedup_check.separation_auc(np.array([]), np.array([1.0]))


def _latent_mean_of_clips(model, frames, clips):
  """The paper's score of each clip, computed from the model's parts directly."""
  codes = model.encode(tf.constant(frames), training=False)[-1]
  predicted = model.motion(tf.gather(codes, clips[:, :-1]), training=False)
  return tf.reduce_mean(tf.square(predicted - tf.gather(codes, clips[:, -1])),
                        axis=[1, 2, 3]).numpy()


def test_check_scores_every_normal_and_sped_up_clip(cfg, model, frames_dataset):
  root = frames_dataset(videos={"training": {"01": 20, "02": 16}}, size=(32, 48))
  _, videos = layout.find_videos("synthetic", root, "training")
  result = speedup_check.speedup_check(model, cfg, videos, held_out=True)
  d = cfg.data  # k=3, interval 2, delta 1: normal clips span 5 frames, sped-up ones 10.
  background = model.background.numpy()
  normal, fast = [], []
  for video in videos:
    frames = pipeline.load_video(video, d.image_size, d.channels, background)
    normal.append(_latent_mean_of_clips(
        model, frames, pipeline.clip_indices(len(frames), d.time_steps, d.interval, d.delta)))
    fast.append(_latent_mean_of_clips(model, frames, pipeline.pseudo_anomaly_clip_indices(
        len(frames), d.time_steps, d.interval, d.delta, speeds=[2])))
  normal, fast = np.concatenate(normal), np.concatenate(fast)
  assert (result.normal_clips, result.sped_up_clips) == (15 + 11, 10 + 6)
  assert result.normal_mean == pytest.approx(normal.mean(), rel=1e-5)
  assert result.sped_up_mean == pytest.approx(fast.mean(), rel=1e-5)
  assert result.auc == pytest.approx(speedup_check.separation_auc(normal, fast), abs=1e-6)
  assert (result.speedup, result.score, result.held_out) == (2, "latent_mean", True)


def test_check_says_when_the_footage_is_too_short(cfg, model, frames_dataset):
  root = frames_dataset(videos={"training": {"01": 8}}, size=(32, 48))
  _, videos = layout.find_videos("synthetic", root, "training")
  with pytest.raises(errors.DataError, match="long enough"):
    speedup_check.speedup_check(model, cfg, videos, held_out=False)


def test_check_footage_prefers_the_training_videos_and_falls_back_to_the_tails(
    cfg, model, frames_dataset):
  root = frames_dataset(videos={"training": {"01": 20, "02": 8}}, size=(32, 48))
  _, (long_video, short_video) = layout.find_videos("synthetic", root, "training")
  both_long = speedup_check.check_footage(model, cfg, [long_video], [long_video])
  assert not both_long.held_out
  fallback = speedup_check.check_footage(model, cfg, [short_video], [long_video])
  assert fallback.held_out and fallback.normal_clips == 20 - 5
  assert speedup_check.check_footage(model, cfg, [short_video], []) is None


def test_training_writes_the_check_next_to_the_threshold(trained):
  cfg, _ = trained
  stored = run_dir.load_speedup_check(cfg.train.model_dir)
  assert stored is not None and 0.0 <= stored["auc"] <= 1.0
  # On the training videos, without the tails held out for the threshold.
  assert not stored["held_out"]
  heads, _ = calibration.training_and_holdout(cfg)
  model = run_dir.restore_model(cfg)
  again = speedup_check.speedup_check(model, cfg, heads, held_out=False)
  assert stored["auc"] == pytest.approx(again.auc, abs=1e-6)
  assert stored["normal_clips"] == again.normal_clips


def test_rank_puts_the_highest_auc_first_and_keeps_ties_in_order():
  rows = [{"model_dir": "a", "speedup_auc": 0.90}, {"model_dir": "b", "speedup_auc": 0.97},
          {"model_dir": "c", "speedup_auc": 0.90}]
  assert [row["model_dir"] for row in rank_runs.rank(rows)] == ["b", "a", "c"]


def test_rank_runs_cli_ranks_and_writes_json(trained, tmp_path):
  cfg, _ = trained
  output = tmp_path / "ranking.json"
  result = subprocess.run(
      [sys.executable, "-m", "daml_tf.rank_runs", f"--model_dirs={cfg.train.model_dir}",
       f"--output={output}"], cwd=testing.REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  ranking = json.loads(output.read_text())
  assert [row["model_dir"] for row in ranking] == [cfg.train.model_dir]
  stored = run_dir.load_speedup_check(cfg.train.model_dir)
  assert ranking[0]["speedup_auc"] == pytest.approx(stored["auc"], abs=1e-5)
  assert f"1. {cfg.train.model_dir}: speed-up AUC" in result.stdout
  assert os.path.exists(os.path.join(cfg.train.model_dir, run_dir.SPEEDUP_CHECK_FILE))
