"""`python -m daml_tf.export`: a run's newest checkpoint exported, never over an existing
version, one message on a bad model directory."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import testing
from testing import HEIGHT, K, WIDTH, camera_frames
from daml_tf.inference import serving

REPO = pathlib.Path(__file__).resolve().parents[1]
THRESHOLD = {"threshold": 0.123, "quantile": 0.99}
# Keras vs the export of the same weights (same ops, other batch shapes).
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("run")
  cfg, model = testing.make_run(model_dir, THRESHOLD, seed=0)
  return str(model_dir), cfg, model


def _run_export(*args):
  return subprocess.run([sys.executable, "-m", "daml_tf.export", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=240)


def test_export_cli_end_to_end(run, tmp_path):
  model_dir, _, model = run
  export_dir = tmp_path / "export"
  result = _run_export(f"--model_dir={model_dir}", f"--export_dir={export_dir}")
  assert result.returncode == 0, result.stderr
  version_dir = str(export_dir / "1")
  assert os.path.isfile(os.path.join(version_dir, "saved_model.pb"))
  assert serving.read_metadata(version_dir)["threshold"] == dict(THRESHOLD, score="latent_mean")
  # The checkpoint restored by the CLI is the fixture's model.
  clip = camera_frames(K + 1, 1, size=(HEIGHT, WIDTH), seed=7)[np.newaxis]
  score = tf.saved_model.load(version_dir).signatures["serving_default"](
      clip=tf.constant(clip))["score"].numpy()
  model_clip = clip.astype("float32") / np.float32(255) - model.background.numpy()
  np.testing.assert_allclose(score, model(model_clip).numpy(), rtol=RTOL, atol=ATOL)

  again = _run_export(f"--model_dir={model_dir}", f"--export_dir={export_dir}", "--version=1")
  assert again.returncode == 1
  assert "already exists" in again.stderr and "Traceback" not in again.stderr
  missing = _run_export(f"--model_dir={tmp_path / 'nowhere'}")
  assert missing.returncode == 1
  assert "nowhere" in missing.stderr and "Traceback" not in missing.stderr
