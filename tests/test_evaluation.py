"""Evaluation of the shared tiny run (conftest.py): outputs, perturbation, scorer, bad labels."""

import dataclasses
import json
import os
import shutil

import numpy as np
from PIL import Image
import pytest

from daml_tf.evaluation import calibration
from daml_tf import config as config_lib
from daml_tf import errors
from daml_tf.evaluation import scoring as evaluation
from daml_tf import run_dir


def test_evaluation_outputs(trained, tmp_path):
  cfg, _ = trained
  cfg = cfg.replace(eval=config_lib.EvalConfig(output_dir=str(tmp_path / "eval")))
  metrics = evaluation.evaluate(cfg)
  span = cfg.data.clip_span
  assert metrics["num_frames"] == 60 and metrics["num_videos"] == 2
  assert metrics["num_scored_frames"] == 60 - 2 * span
  assert 0.0 <= metrics["micro_auc"] <= 1.0 and 0.0 <= metrics["eer"] <= 1.0
  written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert written["micro_auc"] == pytest.approx(metrics["micro_auc"])
  assert written["config"]["data"]["time_steps"] == 3
  rows = (tmp_path / "eval" / "scores.csv").read_text().splitlines()
  assert rows[0] == "video,frame,score,normalized_score,label"
  assert len(rows) == 1 + metrics["num_scored_frames"]
  assert rows[1].split(",")[:2] == ["01", str(span)]
  assert sorted(p.name for p in (tmp_path / "eval").glob("*.png")) == [
      "scores_01.png", "scores_02.png"]
  assert not (tmp_path / "eval" / "heatmaps").exists()  # --heatmaps=0 (the default)
  # The metrics follow from scores.csv alone: AUC of the per-video normalised scores, and the
  # EER where the false-positive and false-negative rates cross (brute force over thresholds).
  table = [row.split(",") for row in rows[1:]]
  normalized = np.array([float(r[3]) for r in table])
  labels = np.array([int(r[4]) for r in table])
  positives, negatives = normalized[labels == 1], normalized[labels == 0]
  pairs = positives[:, None] - negatives[None, :]
  auc = (np.sum(pairs > 0) + 0.5 * np.sum(pairs == 0)) / pairs.size
  assert metrics["micro_auc"] == pytest.approx(auc, abs=1e-9)
  gaps = []
  for threshold in np.unique(normalized):
    fpr = np.mean(negatives >= threshold)
    fnr = np.mean(positives < threshold)
    gaps.append((abs(fpr - fnr), fpr, fnr))
  _, fpr, fnr = min(gaps)
  # The interpolated crossing lies between the two rates of the nearest threshold.
  assert min(fpr, fnr) - 1e-9 <= metrics["eer"] <= max(fpr, fnr) + 1e-9


def test_heatmaps_of_each_videos_highest_scoring_frames(trained, tiny_data, tmp_path):
  cfg, _ = trained
  cfg = cfg.replace(eval=config_lib.EvalConfig(output_dir=str(tmp_path / "eval"), plots=False,
                                               heatmaps=3))
  evaluation.evaluate(cfg)
  rows = [row.split(",") for row in (tmp_path / "eval" / "scores.csv").read_text().split()[1:]]
  expected = set()
  for video in ("01", "02"):
    scored = sorted(((float(r[2]), int(r[1])) for r in rows if r[0] == video), reverse=True)
    assert scored[2][0] > scored[3][0]  # No tie at the cut, so the top 3 are well defined.
    expected |= {f"{video}_{frame}.png" for _, frame in scored[:3]}
  written = sorted((tmp_path / "eval" / "heatmaps").iterdir())
  assert {p.name for p in written} == expected
  for path in written:
    video, frame = path.stem.split("_")
    with Image.open(os.path.join(tiny_data, "testing", "frames", video,
                                 f"{int(frame):03d}.png")) as source:
      plain = np.asarray(source.convert("RGB"))
    with Image.open(path) as image:
      drawn = np.asarray(image)
      # The frame as stored, not the model's 32x48 input.
      assert image.mode == "RGB" and drawn.shape == plain.shape
      assert drawn.shape[:2] != (cfg.data.image_height, cfg.data.image_width)
    # The heatmap reddens part of the frame: red up, green and blue down.
    reddened = ((drawn[..., 0].astype(int) > plain[..., 0]) &
                (drawn[..., 1].astype(int) < plain[..., 1]))
    assert 0 < reddened.mean() < 0.9, path.name


def test_top_frames_takes_the_highest_first_and_the_earlier_on_a_tie():
  np.testing.assert_array_equal(evaluation.top_frames(np.array([0.1, 0.5, 0.3, 0.5]), 3),
                                [1, 3, 2])
  assert len(evaluation.top_frames(np.array([0.2]), 5)) == 1
  with pytest.raises(errors.ConfigError, match="--heatmaps must be >= 0"):
    config_lib.EvalConfig(heatmaps=-1)


def test_evaluation_with_darkened_frames(trained, tmp_path):
  cfg, _ = trained
  plain = evaluation.evaluate(cfg.replace(eval=config_lib.EvalConfig(
      output_dir=str(tmp_path / "plain"), plots=False)))
  dark = evaluation.evaluate(cfg.replace(eval=config_lib.EvalConfig(
      output_dir=str(tmp_path / "dark"), plots=False, perturb="brightness:0.3")))
  assert dark["perturb"] == "brightness:0.3" and plain["perturb"] == ""
  plain_scores = (tmp_path / "plain" / "scores.csv").read_text()
  assert (tmp_path / "dark" / "scores.csv").read_text() != plain_scores


def test_scores_cache_latents_and_match_clip_scores(trained):
  """The per-frame scorer (codes computed once) equals scoring each clip from scratch."""
  cfg, _ = trained
  model = run_dir.restore_model(cfg)
  scorer = evaluation.VideoScorer(model, cfg.data, batch_size=4)
  frames = np.random.default_rng(1).normal(size=(12, 32, 48, 1)).astype("float32")
  frame_indices, scores = scorer.score(frames)
  np.testing.assert_array_equal(frame_indices, np.arange(cfg.data.clip_span, 12))
  k, interval, delta = cfg.data.time_steps, cfg.data.interval, cfg.data.delta
  clips = np.stack([
      frames[[t - delta - (k - 1 - i) * interval for i in range(k)] + [t]]
      for t in frame_indices])
  np.testing.assert_allclose(scores, model(clips).numpy(), rtol=1e-4, atol=1e-6)
  # The error maps are those of the same frames: the paper's score is their mean.
  map_indices, map_scores, maps = scorer.score_and_map(frames)
  np.testing.assert_array_equal(map_indices, frame_indices)
  np.testing.assert_array_equal(map_scores, scores)
  assert maps.shape == (len(frame_indices),) + model.latent_shape[:2]
  np.testing.assert_allclose(maps.mean(axis=(1, 2)), scores, rtol=1e-5)


def test_label_length_mismatch(trained, tiny_data, tmp_path):
  cfg, _ = trained
  labels = dict(np.load(os.path.join(tiny_data, "synthetic.npz")))
  labels["02"] = labels["02"][:-3]
  np.savez(tmp_path / "short.npz", **labels)
  bad = cfg.replace(data=config_lib.dataclasses.replace(
      cfg.data, label_file=str(tmp_path / "short.npz")))
  with pytest.raises(errors.DataError, match="short.npz"):
    evaluation.evaluate(bad)


def test_evaluation_with_a_frame_score_and_smoothing(trained, tmp_path):
  cfg, _ = trained
  eval_cfg = config_lib.EvalConfig(output_dir=str(tmp_path / "psnr"), plots=False,
                                   score="frame_psnr", smoothing="gauss:2")
  metrics = evaluation.evaluate(cfg.replace(eval=eval_cfg))
  assert metrics["score"] == "frame_psnr" and metrics["smoothing"] == "gauss:2"
  # Minus the PSNR of a frame: 10 log10(MSE) of pixels in [0, 1] is below 0.
  rows = (tmp_path / "psnr" / "scores.csv").read_text().splitlines()[1:]
  assert all(float(row.split(",")[2]) < 0 for row in rows)


def test_online_scores_refuse_smoothing_that_looks_ahead():
  with pytest.raises(errors.ConfigError, match="later frames"):
    config_lib.EvalConfig(normalize="none", smoothing="gauss:3")
  config_lib.EvalConfig(normalize="none", smoothing="ema:0.3")


def test_fusion_needs_calibrated_statistics(trained, tmp_path):
  cfg, _ = trained
  model_dir = tmp_path / "run"
  shutil.copytree(cfg.train.model_dir, model_dir)
  fusion = cfg.replace(train=dataclasses.replace(cfg.train, model_dir=str(model_dir)),
                       eval=config_lib.EvalConfig(output_dir=str(tmp_path / "eval"),
                                                  plots=False, score="fusion"))
  with pytest.raises(errors.DataError, match="score_stats.json"):
    evaluation.evaluate(fusion)
  calibration.calibrate_model_dir(str(model_dir), score="fusion")
  stats = run_dir.load_score_stats(str(model_dir))
  assert set(stats) == {"latent_mean", "frame_psnr"} and all(s > 0 for _, s in stats.values())
  assert run_dir.load_threshold(str(model_dir))["score"] == "fusion"
  assert 0.0 <= evaluation.evaluate(fusion)["micro_auc"] <= 1.0
