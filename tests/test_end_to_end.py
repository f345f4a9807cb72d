"""End-to-end: train a few steps on tiny synthetic data, checkpoint, resume, export, evaluate."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from daml_tf import config as config_lib
from daml_tf import evaluation
from daml_tf import serving
from daml_tf import training
from daml_tf.data import layout
from daml_tf.data import synthetic

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 3


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
  root = tmp_path_factory.mktemp("synthetic")
  synthetic.generate(str(root), num_train_videos=2, num_test_videos=2, frames_per_video=30,
                     seed=0)
  return str(root)


def tiny_config(data_dir, model_dir, **train_overrides):
  train_args = dict(model_dir=str(model_dir), train_epochs=1, finetune_epochs=1,
                    image_summary_steps=2, log_every_steps=1)
  train_args.update(train_overrides)
  return config_lib.Config(
      data=config_lib.DataConfig(
          dataset="synthetic", data_dir=data_dir, image_height=32, image_width=48,
          time_steps=3, interval=1, delta=1, batch_size=2,
          clips_per_epoch=2 * STEPS_PER_EPOCH),
      model=config_lib.ModelConfig(levels=2, feature_root=4),
      train=config_lib.TrainConfig(**train_args))


def _event_tags(logdir):
  tags = set()
  for path in tf.io.gfile.glob(os.path.join(logdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(value.tag for value in event.summary.value)
  return tags


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("model")
  cfg = tiny_config(tiny_data, model_dir)
  results = training.train(cfg)
  return cfg, results


def test_training_writes_checkpoint_events_config_export(trained):
  cfg, results = trained
  model_dir = cfg.train.model_dir
  assert results["global_step"] == 2 * STEPS_PER_EPOCH
  assert 0.0 <= results["input_wait_fraction"] <= 1.0
  assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith(
      f"ckpt-{2 * STEPS_PER_EPOCH}")
  saved = config_lib.load_config(os.path.join(model_dir, "config.json"))
  assert saved == cfg
  assert os.path.exists(os.path.join(model_dir, "background.npy"))
  tags = _event_tags(os.path.join(model_dir, "train"))
  for term in ("recon_loss", "latent_loss", "reg_loss", "total_loss", "learning_rate"):
    assert f"step/{term}" in tags and f"epoch/{term}" in tags
  assert "epoch/input_wait_fraction" in tags
  assert {"inputs", "reconstructions", "predicted_frame"} <= tags


def test_saved_model_reloads_in_fresh_process_with_same_scores(trained, tmp_path):
  """Training ends with a serving export: <model_dir>/export/1, uint8 camera clips in."""
  cfg, _ = trained
  model = training.restore_model(cfg)
  version_dir = os.path.join(cfg.train.model_dir, "export", "1")
  assert os.path.isfile(os.path.join(version_dir, "saved_model.pb"))
  rng = np.random.default_rng(0)
  clip = rng.integers(0, 256, size=(3, 4, 32, 48, 1), dtype=np.uint8)
  # At the model's size the in-graph bilinear resize is the identity.
  frames = tf.image.convert_image_dtype(clip, tf.float32).numpy()
  expected = model(frames - model.background.numpy()).numpy()
  np.save(tmp_path / "clip.npy", clip)
  script = (
      "import sys, numpy as np, tensorflow as tf\n"
      "scorer = tf.saved_model.load(sys.argv[1])\n"
      "clip = tf.constant(np.load(sys.argv[2]))\n"
      "np.save(sys.argv[3], scorer.signatures['serving_default'](clip=clip)['score'].numpy())\n")
  subprocess.run(
      [sys.executable, "-c", script, version_dir, str(tmp_path / "clip.npy"),
       str(tmp_path / "scores.npy")], check=True, cwd=REPO)
  np.testing.assert_allclose(np.load(tmp_path / "scores.npy"), expected, rtol=1e-5, atol=1e-7)
  # The export carries what a detector needs: the clip geometry and the calibrated threshold.
  metadata = serving.read_metadata(version_dir)
  assert (metadata["time_steps"], metadata["interval"], metadata["delta"]) == (
      cfg.data.time_steps, cfg.data.interval, cfg.data.delta)
  with open(os.path.join(cfg.train.model_dir, "threshold.json")) as f:
    assert metadata["threshold"]["threshold"] == json.load(f)["threshold"]


def test_resume_continues_from_saved_epoch(tiny_data, tmp_path):
  cfg = tiny_config(tiny_data, tmp_path / "model", finetune_epochs=1, export=False)
  assert training.train(cfg)["global_step"] == 2 * STEPS_PER_EPOCH
  # The same run asked for one more finetune epoch runs exactly that epoch.
  longer = tiny_config(tiny_data, tmp_path / "model", finetune_epochs=2, export=False)
  assert training.train(longer)["global_step"] == 3 * STEPS_PER_EPOCH
  # A finished run started again trains nothing more.
  assert training.train(longer)["global_step"] == 3 * STEPS_PER_EPOCH


def test_resume_restores_optimizer_state(trained):
  cfg, _ = trained
  model = training.build_model(cfg)
  training.compile_model(model, cfg.train)
  epochs_done = tf.Variable(0, dtype=tf.int64)
  checkpoint = training.make_checkpoint(model, epochs_done)
  checkpoint.restore(tf.train.latest_checkpoint(
      os.path.join(cfg.train.model_dir, "checkpoints"))).assert_existing_objects_matched()
  assert int(model.optimizer.iterations.numpy()) == 2 * STEPS_PER_EPOCH
  assert int(epochs_done.numpy()) == 2
  moments = [v for v in model.optimizer.variables if "momentum" in v.path]
  assert moments and any(np.abs(v.numpy()).sum() > 0 for v in moments)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_data, tmp_path):
  good = tiny_config(tiny_data, tmp_path / "model", finetune_epochs=0, export=False)
  training.train(good)
  # An infinite loss weight in the finetune phase makes the first finetune step non-finite.
  bad = tiny_config(tiny_data, tmp_path / "model", finetune_epochs=1,
                    finetune_lambda_r=float("inf"), export=False)
  with pytest.raises(training.TrainingError, match=f"step {STEPS_PER_EPOCH + 1}"):
    training.train(bad)
  latest = tf.train.latest_checkpoint(str(tmp_path / "model" / "checkpoints"))
  assert latest.endswith(f"ckpt-{STEPS_PER_EPOCH}")
  assert np.isfinite(training.restore_model(good).background.numpy()).all()


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
  model = training.restore_model(cfg)
  scorer = evaluation.VideoScorer(model, cfg.data, batch_size=4)
  frames = np.random.default_rng(1).normal(size=(12, 32, 48, 1)).astype("float32")
  frame_indices, scores = scorer.score(frames)
  np.testing.assert_array_equal(frame_indices, np.arange(cfg.data.clip_span, 12))
  k, interval, delta = cfg.data.time_steps, cfg.data.interval, cfg.data.delta
  clips = np.stack([
      frames[[t - delta - (k - 1 - i) * interval for i in range(k)] + [t]]
      for t in frame_indices])
  np.testing.assert_allclose(scores, model(clips).numpy(), rtol=1e-4, atol=1e-6)


# --- bad input: each stops with one clear message, before any training ---------------------


def _no_checkpoint(model_dir):
  return tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")) is None


def test_missing_data_dir(tmp_path):
  cfg = tiny_config(str(tmp_path / "nowhere"), tmp_path / "model")
  with pytest.raises(layout.DataError, match="nowhere"):
    training.train(cfg)
  assert _no_checkpoint(cfg.train.model_dir)


def test_empty_data_dir(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(layout.DataError, match="empty"):
    training.train(tiny_config(str(tmp_path / "empty"), tmp_path / "model"))


def test_video_shorter_than_one_clip(frames_dataset, tmp_path):
  root = frames_dataset(videos={"training": {"01": 12, "02": 3}, "testing": {"01": 12}})
  with pytest.raises(layout.DataError, match="02"):
    training.train(tiny_config(root, tmp_path / "model"))
  assert _no_checkpoint(str(tmp_path / "model"))


def test_truncated_image(frames_dataset, tmp_path):
  root = frames_dataset(videos={"training": {"01": 12}, "testing": {"01": 12}}, ext=".jpg")
  bad = pathlib.Path(root, "training", "frames", "01", "005.jpg")
  bad.write_bytes(bad.read_bytes()[:200])
  with pytest.raises(layout.DataError, match="005.jpg"):
    training.train(tiny_config(root, tmp_path / "model"))
  assert _no_checkpoint(str(tmp_path / "model"))


def test_label_length_mismatch(trained, tiny_data, tmp_path):
  cfg, _ = trained
  labels = dict(np.load(os.path.join(tiny_data, "synthetic.npz")))
  labels["02"] = labels["02"][:-3]
  np.savez(tmp_path / "short.npz", **labels)
  bad = cfg.replace(data=config_lib.dataclasses.replace(
      cfg.data, label_file=str(tmp_path / "short.npz")))
  with pytest.raises(layout.DataError, match="short.npz"):
    evaluation.evaluate(bad)


def test_resume_with_other_architecture_is_refused(trained):
  cfg, _ = trained
  other = cfg.replace(model=config_lib.ModelConfig(levels=2, feature_root=8))
  with pytest.raises(config_lib.ConfigError, match="feature_root"):
    training.train(other)


def _run_cli(*args):
  return subprocess.run([sys.executable, "-m", "daml_tf.train", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,message", [
    (["--dataset=nope"], "Unknown dataset 'nope'"),
    (["--dataset=synthetic", "--time_steps=1"], "--time_steps must be >= 2"),
    (["--dataset=synthetic", "--interval=-1"], "--interval must be >= 1"),
    (["--dataset=synthetic", "--data_dir=/nonexistent/daml"], "/nonexistent/daml"),
])
def test_cli_bad_input_exits_with_one_message(args, message, tmp_path):
  result = _run_cli(*args, f"--model_dir={tmp_path / 'model'}")
  assert result.returncode == 1, result.stderr
  assert message in result.stderr
  assert "Traceback" not in result.stderr
  assert _no_checkpoint(str(tmp_path / "model"))
