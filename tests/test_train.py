"""The `python -m daml_tf.train` entry point: training ends with a calibrated serving export;
bad input stops with one message."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from daml_tf import run_dir
from daml_tf.inference import serving

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_saved_model_reloads_in_fresh_process_with_same_scores(trained, tmp_path):
  """Training ends with a serving export: <model_dir>/export/1, uint8 camera clips in."""
  cfg, _ = trained
  model = run_dir.restore_model(cfg)
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


def _no_checkpoint(model_dir):
  return tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")) is None


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
