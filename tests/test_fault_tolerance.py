"""Training survives being killed: SIGKILL mid-epoch, then the same command finishes the run."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import testing
from daml_tf import errors
from daml_tf.training import local_cluster
from daml_tf import run_dir
from daml_tf.training import loop as training
from daml_tf.data import synthetic

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def data_dir(tiny_data):
  """The shared synthetic dataset (conftest.py); only read here."""
  return tiny_data


def _checkpoint_steps(model_dir):
  state = tf.train.get_checkpoint_state(os.path.join(model_dir, run_dir.CHECKPOINT_SUBDIR))
  if state is None:
    return []
  return [int(path.rsplit("-", 1)[1]) for path in state.all_model_checkpoint_paths]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_same_command_finishes(data_dir, tmp_path):
  steps_per_epoch, epochs = 20, 3
  model_dir = str(tmp_path / "model")
  command = [
      sys.executable, "-m", "daml_tf.train", "--dataset=synthetic", f"--data_dir={data_dir}",
      f"--model_dir={model_dir}", "--image_height=32", "--image_width=48", "--channels=1",
      "--time_steps=3", "--interval=1", "--delta=1", "--batch_size=2", "--levels=2",
      "--feature_root=4", "--train_epochs=2", "--finetune_epochs=1",
      f"--clips_per_epoch={2 * steps_per_epoch}", "--checkpoint_every_steps=3",
      "--image_summary_steps=0", "--calibration_holdout=0", "--noexport", "--nocalibrate",
  ]
  with open(tmp_path / "first.log", "w") as log:
    first = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    # Kill once a step checkpoint inside the first epoch exists (and a little after, so the
    # kill may land anywhere, a checkpoint write included).
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
      steps = _checkpoint_steps(model_dir)
      if steps and max(steps) >= 6:
        break
      time.sleep(0.05)
    time.sleep(np.random.RandomState().uniform(0, 0.5))
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    first.send_signal(signal.SIGKILL)
    first.wait()
  killed_at = max(_checkpoint_steps(model_dir))
  assert 6 <= killed_at < epochs * steps_per_epoch

  second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "Resuming from" in second.stderr
  # Continued from the last checkpoint rather than from scratch.
  assert f"ckpt-{killed_at}" in second.stderr or f"ckpt-{killed_at + 3}" in second.stderr
  # Exactly the scheduled number of steps in total, whatever the kill point.
  assert max(_checkpoint_steps(model_dir)) == epochs * steps_per_epoch
  resumed = tf.train.Checkpoint(
      epochs_done=tf.Variable(0, dtype=tf.int64), epoch_steps_done=tf.Variable(0, dtype=tf.int64))
  resumed.restore(tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
                  ).expect_partial()
  assert int(resumed.epochs_done.numpy()) == epochs
  assert int(resumed.epoch_steps_done.numpy()) == 0


def _tiny_config(data_dir, model_dir, train_epochs):
  return testing.tiny_config(data_dir, model_dir, data=dict(clips_per_epoch=8),
                             train_epochs=train_epochs, finetune_epochs=0,
                             checkpoint_every_steps=1, image_summary_steps=0, export=False,
                             calibrate=False, calibration_holdout=0)


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(data_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  training.train(_tiny_config(data_dir, model_dir, train_epochs=1))
  assert _checkpoint_steps(model_dir) == [2, 3, 4]
  # Damage the newest checkpoint's data, as a disk error after the save would.
  checkpoint_dir = os.path.join(model_dir, run_dir.CHECKPOINT_SUBDIR)
  for path in tf.io.gfile.glob(os.path.join(checkpoint_dir, "ckpt-4.data-*")):
    with open(path, "r+b") as f:
      f.truncate(8)
  # A half-written save of a later step (its files exist, the state file does not name it).
  with open(os.path.join(checkpoint_dir, "ckpt-9.index"), "wb") as f:
    f.write(b"partial")
  results = training.train(_tiny_config(data_dir, model_dir, train_epochs=2)).metrics
  # ckpt-3 (3 of the 4 steps of epoch 1) was restored, so one step finished epoch 1 and four
  # ran in epoch 2.
  assert results["global_step"] == 8
  assert max(_checkpoint_steps(model_dir)) == 8


def test_no_readable_checkpoint_is_an_error_not_a_silent_restart(data_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  training.train(_tiny_config(data_dir, model_dir, train_epochs=1))
  for path in tf.io.gfile.glob(os.path.join(model_dir, "checkpoints", "ckpt-*.data-*")):
    with open(path, "r+b") as f:
      f.truncate(8)
  with pytest.raises(errors.TrainingError, match="No checkpoint"):
    training.train(_tiny_config(data_dir, model_dir, train_epochs=2))


@pytest.mark.slow
def test_sigkill_one_worker_then_restart_all_finishes(tmp_path):
  """Multi-worker: a worker dies, the chief stops with a clear message, the same commands on
  both workers resume from the chief's last checkpoint and finish the schedule exactly."""
  synthetic.generate(str(tmp_path / "data"), num_train_videos=2, num_test_videos=1,
                     frames_per_video=40, seed=0)
  model_dir = str(tmp_path / "model")
  steps_per_epoch, epochs = 20, 3
  command = [
      sys.executable, "-m", "daml_tf.train", "--dataset=synthetic",
      f"--data_dir={tmp_path / 'data'}", f"--model_dir={model_dir}", "--image_height=32",
      "--image_width=48", "--channels=1", "--time_steps=3", "--interval=1", "--delta=1",
      "--batch_size=4", "--levels=2", "--feature_root=4", "--train_epochs=2",
      "--finetune_epochs=1", f"--clips_per_epoch={4 * steps_per_epoch}",
      "--checkpoint_every_steps=3", "--image_summary_steps=0", "--calibration_holdout=0",
      "--noexport", "--nocalibrate", "--strategy=multi_worker",
  ]

  def launch(tag):
    return local_cluster.start_workers(command, 2, str(tmp_path / tag), cwd=REPO)

  first = launch("first")
  deadline = time.time() + 300
  while time.time() < deadline and first[0].poll() is None:
    steps = _checkpoint_steps(model_dir)
    if steps and max(steps) >= 6:
      break
    time.sleep(0.05)
  first[1].send_signal(signal.SIGKILL)
  # The chief's next collective fails; it must stop on its own, with one clear message.
  assert first[0].wait(timeout=180) == 1
  chief_log = (tmp_path / "first0.log").read_text()
  assert "Lost contact with another worker" in chief_log, chief_log[-3000:]
  killed_at = max(_checkpoint_steps(model_dir))
  assert killed_at < epochs * steps_per_epoch

  second = launch("second")
  for index, process in enumerate(second):
    assert process.wait(timeout=600) == 0, (tmp_path / f"second{index}.log").read_text()[-3000:]
  for index in range(2):
    assert f"Resuming from {model_dir}/checkpoints/ckpt-{killed_at}" in (
        tmp_path / f"second{index}.log").read_text()
  assert max(_checkpoint_steps(model_dir)) == epochs * steps_per_epoch
