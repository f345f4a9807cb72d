"""Training on tiny synthetic data: checkpoints, summaries, resume, and bad input stopping early.

The shared run (`trained` in conftest.py) is the one `python -m daml_tf.train` makes.
"""

import dataclasses
import json
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from testing import STEPS_PER_EPOCH, make_run, short_run_config
from daml_tf.evaluation import calibration
from daml_tf import config as config_lib
from daml_tf import errors
from daml_tf import run_dir
from daml_tf.evaluation import speedup_check
from daml_tf.training import candidates as candidates_lib
from daml_tf.training import checkpoints as checkpoints_lib
from daml_tf.training import data as training_data
from daml_tf.training import distributed
from daml_tf.training import loop as training
from daml_tf.training import schedule
from daml_tf.inference import litert
from daml_tf.inference import serving
from daml_tf.models import build


def _event_tags(logdir):
  tags = set()
  for path in tf.io.gfile.glob(os.path.join(logdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(value.tag for value in event.summary.value)
  return tags


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


def test_resume_continues_from_saved_epoch(tiny_data, tmp_path):
  cfg = short_run_config(tiny_data, tmp_path / "model", finetune_epochs=1, export=False)
  assert training.train(cfg).metrics["global_step"] == 2 * STEPS_PER_EPOCH
  # The same run asked for one more finetune epoch runs exactly that epoch.
  longer = short_run_config(tiny_data, tmp_path / "model", finetune_epochs=2, export=False)
  assert training.train(longer).metrics["global_step"] == 3 * STEPS_PER_EPOCH
  # A finished run started again trains nothing more.
  assert training.train(longer).metrics["global_step"] == 3 * STEPS_PER_EPOCH


def _weights(model):
  # By position: a second model in one process gets uniquified names.
  return [(weight.path, weight.numpy()) for weight in model.weights]


def _checkpoint_steps(checkpoint_dir):
  """The global steps of the checkpoints a CheckpointManager keeps in checkpoint_dir."""
  state = tf.train.get_checkpoint_state(str(checkpoint_dir))
  return [int(path.rsplit("-", 1)[1]) for path in state.all_model_checkpoint_paths]


def _copy_checkpoint(source_dir, killed_after_step, model_dir):
  """A model directory holding only the newest checkpoint of source_dir written by step
  `killed_after_step`: the run as a kill right after that step would have left it."""
  source = run_dir.checkpoint_dir(str(source_dir))
  target = run_dir.checkpoint_dir(str(model_dir))
  tf.io.gfile.makedirs(target)
  step = max(number for number in _checkpoint_steps(source) if number <= killed_after_step)
  for path in tf.io.gfile.glob(os.path.join(source, f"ckpt-{step}.*")):
    tf.io.gfile.copy(path, os.path.join(target, os.path.basename(path)))
  tf.compat.v1.train.update_checkpoint_state(target, os.path.join(target, f"ckpt-{step}"))


@pytest.mark.parametrize("train_args", [
    dict(), dict(pseudo_anomaly_weight=1.0), dict(finetune_candidates=2)],
    ids=["plain", "pseudo_anomalies", "finetune_candidates"])
@pytest.mark.parametrize("killed_after_step", [2, STEPS_PER_EPOCH + 1])
def test_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tiny_data, tmp_path,
                                                               train_args, killed_after_step):
  """Killed in the middle of an epoch (of the train or the finetune phase) and started again,
  a run draws the batches it would have drawn (a short epoch is not a whole pass over the
  clips, so the stream position is more than the step within the epoch), and ends with the
  uninterrupted run's weights, bit for bit. Finetune candidates write no checkpoint, so a kill
  among them resumes from the train phase's end and runs them again on the same batches."""
  def run(model_dir):
    cfg = short_run_config(tiny_data, model_dir, export=False, calibrate=False,
                           checkpoint_every_steps=1, checkpoints_to_keep=0, **train_args)
    return training.train(cfg).model

  uninterrupted = _weights(run(tmp_path / "uninterrupted"))
  _copy_checkpoint(tmp_path / "uninterrupted", killed_after_step, tmp_path / "resumed")
  resumed = _weights(run(tmp_path / "resumed"))
  assert len(uninterrupted) == len(resumed)
  for (name, value), (_, resumed_value) in zip(uninterrupted, resumed):
    np.testing.assert_array_equal(resumed_value, value, err_msg=name)


def test_checkpoints_to_keep_zero_keeps_every_epoch(tiny_data, tmp_path):
  """The learning curve of experiments/ped2_accuracy/checkpoint_ablation.py needs each epoch's weights."""
  def kept(name, to_keep):
    cfg = short_run_config(tiny_data, tmp_path / name, train_epochs=3, export=False,
                           calibrate=False, checkpoint_every_steps=0,
                           checkpoints_to_keep=to_keep)
    training.train(cfg)
    return _checkpoint_steps(run_dir.checkpoint_dir(cfg.train.model_dir))

  assert kept("all", 0) == [STEPS_PER_EPOCH * epoch for epoch in (1, 2, 3, 4)]
  assert kept("two", 2) == [STEPS_PER_EPOCH * 3, STEPS_PER_EPOCH * 4]


def test_resume_restores_optimizer_state(trained):
  cfg, _ = trained
  model = build.build_model(cfg)
  schedule.compile_model(model, cfg.train)
  epochs_done = tf.Variable(0, dtype=tf.int64)
  checkpoint = checkpoints_lib.make_checkpoint(model, epochs_done)
  checkpoint.restore(tf.train.latest_checkpoint(
      os.path.join(cfg.train.model_dir, "checkpoints"))).assert_existing_objects_matched()
  assert int(model.optimizer.iterations.numpy()) == 2 * STEPS_PER_EPOCH
  assert int(epochs_done.numpy()) == 2
  moments = [v for v in model.optimizer.variables if "momentum" in v.path]
  assert moments and any(np.abs(v.numpy()).sum() > 0 for v in moments)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_data, tmp_path):
  good = short_run_config(tiny_data, tmp_path / "model", finetune_epochs=0, export=False)
  training.train(good)
  # An infinite loss weight in the finetune phase makes the first finetune step non-finite.
  bad = short_run_config(tiny_data, tmp_path / "model", finetune_epochs=1,
                    finetune_lambda_r=float("inf"), export=False)
  with pytest.raises(errors.TrainingError, match=f"step {STEPS_PER_EPOCH + 1}"):
    training.train(bad)
  latest = tf.train.latest_checkpoint(str(tmp_path / "model" / "checkpoints"))
  assert latest.endswith(f"ckpt-{STEPS_PER_EPOCH}")
  assert np.isfinite(run_dir.restore_model(good).background.numpy()).all()


# --- bad input: each stops with one clear message, before any training ---------------------


def _no_checkpoint(model_dir):
  return tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")) is None


def test_missing_data_dir(tmp_path):
  cfg = short_run_config(str(tmp_path / "nowhere"), tmp_path / "model")
  with pytest.raises(errors.DataError, match="nowhere"):
    training.train(cfg)
  assert _no_checkpoint(cfg.train.model_dir)


def test_empty_data_dir(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(errors.DataError, match="empty"):
    training.train(short_run_config(str(tmp_path / "empty"), tmp_path / "model"))


def test_video_shorter_than_one_clip(frames_dataset, tmp_path):
  root = frames_dataset(videos={"training": {"01": 12, "02": 3}, "testing": {"01": 12}})
  with pytest.raises(errors.DataError, match="02"):
    training.train(short_run_config(root, tmp_path / "model"))
  assert _no_checkpoint(str(tmp_path / "model"))


def test_truncated_image(frames_dataset, tmp_path):
  root = frames_dataset(videos={"training": {"01": 12}, "testing": {"01": 12}}, ext=".jpg")
  bad = pathlib.Path(root, "training", "frames", "01", "005.jpg")
  bad.write_bytes(bad.read_bytes()[:200])
  with pytest.raises(errors.DataError, match="005.jpg"):
    training.train(short_run_config(root, tmp_path / "model"))
  assert _no_checkpoint(str(tmp_path / "model"))


def test_resume_with_other_architecture_is_refused(trained):
  cfg, _ = trained
  other = cfg.replace(model=config_lib.ModelConfig(levels=2, feature_root=8))
  with pytest.raises(errors.ConfigError, match="feature_root"):
    training.train(other)


def test_finetune_phase_trains_what_the_config_says():
  cfg = short_run_config("", "unused", finetune_trains="motion")
  assert [(p.name, p.trains) for p in schedule.phases(cfg.train)] == [
      ("train", "all"), ("finetune", "motion")]
  with pytest.raises(errors.ConfigError, match="finetune_trains"):
    short_run_config("", "unused", finetune_trains="decoder")


def test_motion_only_finetune_run_keeps_the_unet(tiny_data, tmp_path):
  cfg = short_run_config(tiny_data, tmp_path / "model", finetune_epochs=0, export=False,
                         calibrate=False)
  after_train = training.train(cfg).model
  unet = [w.numpy().copy() for w in after_train.encoder.weights + after_train.decoder.weights]
  longer = short_run_config(tiny_data, tmp_path / "model", finetune_epochs=1, export=False,
                            calibrate=False, finetune_trains="motion",
                            pseudo_anomaly_weight=1.0, pseudo_anomaly_speeds="2")
  model = training.train(longer).model
  assert int(model.optimizer.iterations.numpy()) == 2 * STEPS_PER_EPOCH
  for before, after in zip(unet, model.encoder.weights + model.decoder.weights):
    np.testing.assert_array_equal(before, after.numpy())


def test_finetune_candidates_keep_the_one_with_the_best_check(tiny_data, tmp_path):
  cfg = short_run_config(tiny_data, tmp_path / "model", export=False, calibrate=False,
                         finetune_trains="motion", finetune_candidates=3)
  model = training.train(cfg).model
  with open(os.path.join(cfg.train.model_dir, run_dir.FINETUNE_CANDIDATES_FILE)) as f:
    stored = json.load(f)
  checks = stored["speedup_checks"]
  assert len(checks) == 3 and stored["kept"] == int(np.argmax(checks))
  # Each candidate trained on other batches, so they differ.
  assert len(set(checks)) > 1
  # Every candidate starts from the same optimizer state: one finetune epoch's steps in all.
  assert int(model.optimizer.iterations.numpy()) == 2 * STEPS_PER_EPOCH
  # The saved checkpoint holds the kept candidate.
  heads, tails = calibration.training_and_holdout(cfg)
  again = speedup_check.check_footage(run_dir.restore_model(cfg), cfg, heads, tails)
  assert again.auc == pytest.approx(checks[stored["kept"]], abs=1e-6)


class _SameBatchesLoop:
  """An epoch loop that feeds every epoch the same batches: candidates then differ in nothing."""

  save_within_epochs = True

  def __init__(self, step, batches):
    self._step = step
    self._batches = batches

  def run(self, phase, epoch):
    del phase, epoch
    for batch in self._batches:
      self._step(batch)
    return {"total_loss": 0.0}


def test_finetune_candidates_all_start_from_the_same_state(tiny_data, tmp_path):
  """Fed the same batches, every candidate must end bit-identical: nothing of the first
  candidate's training (weights, BatchNorm statistics, optimizer moments, step) leaks into the
  next one's start."""
  cfg = short_run_config(tiny_data, tmp_path / "model", export=False, calibrate=False,
                         finetune_trains="motion", finetune_candidates=3)
  data = training_data.prepare_training_data(cfg, cfg.train.model_dir)
  model = build.build_model(cfg)
  schedule.compile_model(model, cfg.train)
  model.set_background(data.background)
  strategy = tf.distribute.get_strategy()
  step = training._step_function(strategy, model, "motion", cfg.train)  # pylint: disable=protected-access
  clips = training_data.make_clip_data(cfg, data).dataset
  batches = list(clips.take(STEPS_PER_EPOCH))
  role = distributed.worker_role(strategy)
  checkpoints = checkpoints_lib.Checkpoints(model, cfg.train.model_dir, role, 3)
  candidates = candidates_lib.FinetuneCandidates(cfg, model, data, role)
  finetune = [(schedule.phases(cfg.train)[1], 0)]
  candidates.run(_SameBatchesLoop(step, batches), checkpoints, finetune, training._run_epoch)  # pylint: disable=protected-access
  with open(os.path.join(cfg.train.model_dir, run_dir.FINETUNE_CANDIDATES_FILE)) as f:
    checks = json.load(f)["speedup_checks"]
  assert checks[0] == checks[1] == checks[2]
  assert int(model.optimizer.iterations.numpy()) == STEPS_PER_EPOCH
  assert int(checkpoints.epochs_done.numpy()) == 1


@pytest.mark.parametrize("train_args, message", [
    (dict(finetune_candidates=0), "finetune_candidates must be >= 1"),
    (dict(finetune_candidates=2, finetune_epochs=0), "needs a finetune phase"),
    (dict(finetune_candidates=2, strategy="multi_worker"), "not supported"),
])
def test_finetune_candidates_bad_settings(train_args, message):
  with pytest.raises(errors.ConfigError, match=message):
    short_run_config("", "unused", **train_args)


def test_finetune_candidates_need_footage_long_enough(frames_dataset, tmp_path):
  root = frames_dataset(videos={"training": {"01": 6, "02": 6}, "testing": {"01": 6}})
  cfg = short_run_config(root, tmp_path / "model", export=False, calibrate=False,
                         finetune_candidates=2)
  with pytest.raises(errors.ConfigError, match="twice as fast"):
    training.train(cfg)


def test_checkpoint_without_the_step_counter_resumes(tiny_data, tmp_path):
  """Checkpoints written before epoch_steps_done existed (pretrained/ped2_cpu) still train."""
  cfg = short_run_config(tiny_data, tmp_path / "model", finetune_epochs=0, export=False,
                         calibrate=False)
  model = training.train(cfg).model
  # Rewrite the run's checkpoint the way earlier versions did: no in-epoch step counter.
  legacy_dir = run_dir.checkpoint_dir(cfg.train.model_dir)
  tf.io.gfile.rmtree(legacy_dir)
  epochs_done = tf.Variable(1, dtype=tf.int64)
  checkpoints_lib.make_checkpoint(model, epochs_done).save(os.path.join(legacy_dir, "ckpt"))
  longer = short_run_config(tiny_data, tmp_path / "model", finetune_epochs=1, export=False,
                            calibrate=False)
  assert training.train(longer).metrics["global_step"] == 2 * STEPS_PER_EPOCH


def _init_from_config(tiny_data, model_dir, init_from, **model):
  cfg = short_run_config(tiny_data, model_dir, train_epochs=0, finetune_epochs=0, export=False,
                         calibrate=False, init_from=str(init_from))
  return cfg.replace(model=dataclasses.replace(cfg.model, **model)) if model else cfg


def test_init_from_loads_the_weights_and_starts_fresh(tiny_data, tmp_path):
  _, source = make_run(tmp_path / "source", {"threshold": 1.0, "quantile": 0.99}, seed=3)
  # latent_loss_trains_encoder changes the loss only: a fine-tune may change it.
  cfg = _init_from_config(tiny_data, tmp_path / "new", tmp_path / "source",
                          latent_loss_trains_encoder=False)
  run = training.train(cfg)
  assert run.metrics["global_step"] == 0
  for before, after in zip(source.weights, run.model.weights):
    if before.path.endswith("background"):
      # The background is the new run's data, not the source's.
      np.testing.assert_array_equal(after.numpy(), run.data.background)
    else:
      np.testing.assert_array_equal(before.numpy(), after.numpy(), err_msg=before.path)


def test_init_from_a_checkpoint_folder_trains(tiny_data, tmp_path):
  make_run(tmp_path / "source", {"threshold": 1.0, "quantile": 0.99})
  cfg = _init_from_config(tiny_data, tmp_path / "new", tmp_path / "source" / "checkpoints")
  cfg = cfg.replace(train=dataclasses.replace(cfg.train, train_epochs=1))
  assert training.train(cfg).metrics["global_step"] == STEPS_PER_EPOCH
  # Once the run has checkpoints of its own it resumes from them, --init_from or not.
  cfg = cfg.replace(train=dataclasses.replace(cfg.train, train_epochs=2))
  assert training.train(cfg).metrics["global_step"] == 2 * STEPS_PER_EPOCH


def test_init_from_another_architecture_is_refused(tiny_data, tmp_path):
  make_run(tmp_path / "source", {"threshold": 1.0, "quantile": 0.99})
  cfg = _init_from_config(tiny_data, tmp_path / "new", tmp_path / "source", feature_root=8)
  with pytest.raises(errors.ConfigError, match="feature_root: saved 4 vs now 8"):
    training.train(cfg)
  assert not run_dir.is_run_dir(cfg.train.model_dir)  # Refused before anything is written.
  # Without the run's config.json the checkpoint itself tells.
  os.remove(run_dir.config_path(str(tmp_path / "source")))
  cfg = _init_from_config(tiny_data, tmp_path / "new2", tmp_path / "source" / "checkpoints",
                          feature_root=8)
  with pytest.raises(errors.ConfigError, match="cannot load"):
    training.train(cfg)
  with pytest.raises(errors.ConfigError, match="no checkpoint"):
    training.train(_init_from_config(tiny_data, tmp_path / "new3", tmp_path / "nowhere"))


def _exported_run(tmp_path):
  """A run with its serving export in <run>/export/1, as training writes it."""
  cfg, source = make_run(tmp_path / "source", {"threshold": 1.0, "quantile": 0.99}, seed=3)
  serving.export_serving(source, run_dir.export_dir(str(tmp_path / "source")),
                         data_cfg=cfg.data)
  return source


def test_init_from_a_serving_export_adapts_the_motion_model(tiny_data, tmp_path):
  source = _exported_run(tmp_path)
  export_base = tmp_path / "source" / "export"
  cfg = _init_from_config(tiny_data, tmp_path / "new", export_base)  # the highest version
  cfg = cfg.replace(train=dataclasses.replace(cfg.train, finetune_epochs=1,
                                              finetune_trains="motion"))
  run = training.train(cfg)
  assert run.metrics["global_step"] == STEPS_PER_EPOCH
  # The encoder is the export's, frozen by the motion-only finetune: bit-identical.
  for before, after in zip(source.encoder.weights, run.model.encoder.weights):
    np.testing.assert_array_equal(before.numpy(), after.numpy(), err_msg=before.path)
  # The motion model started from the export's weights and trained from there.
  trainable = [(b.numpy(), a.numpy()) for b, a in zip(source.motion.trainable_weights,
                                                       run.model.motion.trainable_weights)]
  assert any(np.any(b != a) for b, a in trainable)
  assert all(np.abs(b - a).max() < 0.05 for b, a in trainable)
  # The decoder is not in an export: it keeps the new run's own initial weights.
  assert not all(np.array_equal(b.numpy(), a.numpy())
                 for b, a in zip(source.decoder.weights, run.model.decoder.weights))
  # Without any training the export's motion model arrives unchanged too.
  still = training.train(_init_from_config(tiny_data, tmp_path / "still",
                                           export_base / "1"))
  for before, after in zip(source.motion.weights, still.model.motion.weights):
    np.testing.assert_array_equal(before.numpy(), after.numpy(), err_msg=before.path)


def test_init_from_a_serving_export_refuses_what_needs_the_decoder(tiny_data, tmp_path):
  _exported_run(tmp_path)
  export = tmp_path / "source" / "export" / "1"
  cfg = _init_from_config(tiny_data, tmp_path / "new", export)
  trains_decoder = cfg.replace(train=dataclasses.replace(cfg.train, train_epochs=1))
  with pytest.raises(errors.ConfigError, match="not the decoder") as refused:
    training.train(trains_decoder)
  # The message names what to give instead: the run the export came from, or motion-only.
  assert f"--init_from={tmp_path / 'source'}" in str(refused.value)
  assert "--train_epochs=0 --finetune_trains=motion" in str(refused.value)
  assert not run_dir.is_run_dir(cfg.train.model_dir)  # Refused before anything is written.
  finetunes_all = cfg.replace(train=dataclasses.replace(cfg.train, finetune_epochs=1))
  with pytest.raises(errors.ConfigError, match="--finetune_trains=all"):
    training.train(finetunes_all)
  other_k = cfg.replace(data=dataclasses.replace(cfg.data, time_steps=4))
  with pytest.raises(errors.ConfigError, match="time_steps: saved 3 vs now 4"):
    training.train(other_k)
  with pytest.raises(errors.ConfigError, match="cannot load"):
    training.train(_init_from_config(tiny_data, tmp_path / "wide", export, feature_root=8))
  litert_dir = tmp_path / "source" / "export" / "litert" / "1"
  litert_dir.mkdir(parents=True)
  (litert_dir / litert.METADATA_FILE).write_text("{}")
  with pytest.raises(errors.ConfigError, match="LiteRT export"):
    training.train(_init_from_config(tiny_data, tmp_path / "lite", litert_dir.parent))
