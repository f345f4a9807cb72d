"""LiteRT export: conversion in a child process, interpreter numerics, detection, failures.

One module fixture runs the real CLI, `python -m daml_tf.export --tflite`, on a checkpointed
tiny model (as tests/test_export.py builds it); every other test reads its output.

Tolerances, against the float32 Keras model on the same inputs:
  float32 flatbuffers: 1e-4 absolute on codes and predictions (observed ~1e-7).
  float16-weight flatbuffers: 5e-3 x the largest reference magnitude (observed ~7e-4 x), and
  5e-3 relative on scores (observed ~3e-4): float16 keeps 11 significant bits per weight.
"""

import csv
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import testing
from testing import CAMERA, HEIGHT, K, LATENT, WIDTH, camera_frames
from daml_tf import errors
from daml_tf.inference import backends
from daml_tf.inference import litert
from daml_tf.inference import litert_convert
from daml_tf.inference import streaming

REPO = pathlib.Path(__file__).resolve().parents[1]
THRESHOLD = {"threshold": 0.25, "quantile": 0.99}
FLOAT32_ATOL = 1e-4
FLOAT16_SCALE_TOL = 5e-3
FLOAT16_SCORE_RTOL = 5e-3




def keras_codes(model, frames):
  """The float32 Keras codes of uint8 frames, preprocessed with tf.image as in training."""
  image = tf.image.convert_image_dtype(frames, tf.float32)
  if frames.shape[-1] == 3:
    image = tf.image.rgb_to_grayscale(image)
  image = tf.image.resize(image, (HEIGHT, WIDTH), method="bilinear")
  return model.encode(image - model.background)[-1].numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """The export CLI with --tflite on a run directory: (cfg, model, export_dir, litert_dir)."""
  model_dir = tmp_path_factory.mktemp("run")
  cfg, model = testing.make_run(model_dir, THRESHOLD, seed=1)
  export_dir = model_dir / "export"
  result = subprocess.run(
      [sys.executable, "-m", "daml_tf.export", f"--model_dir={model_dir}",
       f"--export_dir={export_dir}", "--tflite"],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return cfg, model, str(export_dir), str(export_dir / "litert" / "1")


def test_cli_writes_the_litert_export(exported):
  cfg, model, export_dir, litert_dir = exported
  assert os.path.isfile(os.path.join(export_dir, "1", "saved_model.pb"))
  assert sorted(os.listdir(litert_dir)) == sorted([
      "encoder.tflite", "encoder_fp16.tflite", "motion.tflite", "motion_fp16.tflite",
      litert.METADATA_FILE, litert.BACKGROUND_FILE])
  # float16 weights: smaller files.
  for name in ("encoder", "motion"):
    assert (os.path.getsize(os.path.join(litert_dir, f"{name}_fp16.tflite")) <
            os.path.getsize(os.path.join(litert_dir, f"{name}.tflite")))
  metadata = litert.read_metadata(litert_dir)
  assert metadata["image_size"] == [HEIGHT, WIDTH] and metadata["channels"] == 1
  assert (metadata["time_steps"], metadata["interval"], metadata["delta"]) == (K, 2, 1)
  assert metadata["latent_shape"] == list(LATENT)
  assert metadata["threshold"] == dict(THRESHOLD, score="latent_mean")
  assert metadata["background_in_encoder"]
  np.testing.assert_array_equal(np.load(os.path.join(litert_dir, litert.BACKGROUND_FILE)),
                                model.background.numpy())
  # TF Serving sees only the numeric version: litert/ is not one.
  assert sorted(os.listdir(export_dir)) == ["1", "litert"]


@pytest.mark.parametrize("size,channels", [((HEIGHT, WIDTH), 1), (CAMERA, 3)])
def test_float32_flatbuffers_match_keras(exported, size, channels):
  _, model, _, litert_dir = exported
  backend = litert.LiteRTBackend(litert_dir, "float32")
  frames = camera_frames(3, channels, size=size)
  codes = np.concatenate([backend.encode(frame) for frame in frames])
  expected = keras_codes(model, frames)
  assert codes.shape == (3,) + LATENT and codes.dtype == np.float32
  np.testing.assert_allclose(codes, expected, rtol=0, atol=FLOAT32_ATOL)
  past = expected[np.newaxis]
  np.testing.assert_allclose(backend.predict(past), model.motion(past).numpy(), rtol=0,
                             atol=FLOAT32_ATOL)


def test_float16_flatbuffers_are_close_to_keras(exported):
  _, model, _, litert_dir = exported
  backend = litert.LiteRTBackend(litert_dir, "float16")
  frames = camera_frames(3, 3)
  expected = keras_codes(model, frames)
  codes = np.concatenate([backend.encode(frame) for frame in frames])
  np.testing.assert_allclose(codes, expected, rtol=0,
                             atol=FLOAT16_SCALE_TOL * np.abs(expected).max())
  past = expected[np.newaxis]
  predicted = model.motion(past).numpy()
  np.testing.assert_allclose(backend.predict(past), predicted, rtol=0,
                             atol=FLOAT16_SCALE_TOL * np.abs(predicted).max())
  # Not the float32 flatbuffer under another name.
  assert not np.array_equal(codes[:1], litert.LiteRTBackend(litert_dir).encode(frames[0]))


def test_numpy_preprocessing_is_tf_image(exported):
  frames = camera_frames(2, 3)
  for channels in (1, 3):
    for frame in (frames[0], frames[0][..., :1], frames[0].astype(np.uint16) * 257):
      expected = tf.image.convert_image_dtype(frame, tf.float32)
      if channels == 1 and frame.shape[-1] == 3:
        expected = tf.image.rgb_to_grayscale(expected)
      elif channels == 3 and frame.shape[-1] == 1:
        expected = tf.image.grayscale_to_rgb(expected)
      np.testing.assert_allclose(litert.to_unit_range(frame, channels), expected.numpy(),
                                 rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("precision", litert.PRECISIONS)
def test_detector_on_litert_matches_keras(exported, precision):
  cfg, model, _, litert_dir = exported
  frames = camera_frames(16, 3, seed=3)
  keras_detector = streaming.StreamingDetector(model, cfg.data)
  expected = np.array([keras_detector.process(frame).score for frame in frames][5:])
  detector = streaming.StreamingDetector.from_model_dir(
      litert_dir, runtime_options=backends.RuntimeOptions(precision=precision))
  assert isinstance(detector.backend, litert.LiteRTBackend)
  assert detector.data_cfg == cfg.data and detector.threshold == THRESHOLD["threshold"]
  results = [detector.process(frame) for frame in frames]
  span = cfg.data.clip_span
  assert [r.score for r in results[:span]] == [None] * span
  rtol = 1e-4 if precision == "float32" else FLOAT16_SCORE_RTOL
  np.testing.assert_allclose([r.score for r in results[span:]], expected, rtol=rtol)


@pytest.mark.parametrize("score", ["latent_top10", "cosine"])
def test_litert_scores_every_latent_score_as_keras(exported, score):
  cfg, model, _, litert_dir = exported
  frames = camera_frames(12, 3, seed=5)
  keras_detector = streaming.StreamingDetector(model, cfg.data, score=score)
  expected = [keras_detector.process(frame).score for frame in frames]
  # The stored threshold is for the paper's score: another score needs its own.
  with pytest.raises(errors.ConfigError, match="latent_mean"):
    streaming.StreamingDetector.from_model_dir(litert_dir, score=score)
  detector = streaming.StreamingDetector.from_model_dir(litert_dir, threshold=1.0, score=score)
  got = [detector.process(frame).score for frame in frames]
  span = cfg.data.clip_span
  np.testing.assert_allclose(got[span:], expected[span:], rtol=1e-4, atol=1e-7)


def test_detect_cli_on_the_litert_export(exported, tmp_path):
  cfg, model, export_dir, _ = exported
  frames = camera_frames(12, 3, seed=4)
  folder = tmp_path / "frames"
  folder.mkdir()
  for i, frame in enumerate(frames):
    Image.fromarray(frame).save(folder / f"{i}.png")
  keras_detector = streaming.StreamingDetector(model, cfg.data)
  expected = [keras_detector.process(frame).score for frame in frames]
  span = cfg.data.clip_span
  # Halfway between two scores: no score sits on it, whatever the runtime's last bits.
  ordered = np.sort(expected[span:])
  threshold = float(ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
  # The LiteRT base directory: the highest version is run.
  result = subprocess.run(
      [sys.executable, "-m", "daml_tf.detect", f"--model_dir={export_dir}/litert",
       f"--input={folder}", f"--output_dir={tmp_path / 'out'}", f"--threshold={threshold}"],
      cwd=REPO, capture_output=True, text=True, timeout=240)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "LiteRT float32" in result.stderr
  with open(tmp_path / "out" / "scores.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 12 and all(row["score"] == "" for row in rows[:span])
  scores = np.array([row["score"] for row in rows[span:]], np.float64)
  np.testing.assert_allclose(scores, expected[span:], rtol=1e-4)
  # --threshold overrides the one recorded in the export.
  alarms = [row["alarm"] == "1" for row in rows[span:]]
  assert alarms == list(scores > threshold) and 0 < sum(alarms) < len(alarms)


def test_conversion_failures_are_reported_cleanly(tmp_path, monkeypatch):
  missing = tmp_path / "nowhere"
  with pytest.raises(errors.ExportError) as failed:
    litert_convert.convert_in_subprocess(str(missing), str(tmp_path / "out"))
  message = str(failed.value)
  assert "exit status 1" in message and f"No SavedModel in '{missing}'" in message
  assert "python -m daml_tf.inference.litert_convert" in message and "Traceback" not in message
  assert not (tmp_path / "out").exists()

  # The converter's native abort on this stack (SIGABRT after an MLIR error), simulated.
  crash = ("import os, sys\n"
           "sys.stderr.write('2026-01-01 00:00:00.000000: E external/local_xla/cuda_dnn.cc:1] "
           "Unable to register cuDNN factory\\n')\n"
           "sys.stderr.write('loc(fused[\"ReadVariableOp:\", \"x\" ' + 'y' * 5000 + "
           "']): error: missing attribute \\'value\\'\\n')\n"
           "sys.stderr.write('LLVM ERROR: Failed to infer result type(s).\\n')\n"
           "sys.stderr.flush()\n"
           "os.abort()\n")
  monkeypatch.setattr(litert_convert, "converter_command",
                      lambda *args: [sys.executable, "-c", crash])
  with pytest.raises(errors.ExportError) as crashed:
    litert_convert.convert_in_subprocess("saved", "out")
  message = str(crashed.value)
  assert "crashed (SIGABRT)" in message
  assert "error: missing attribute 'value'" in message and "LLVM ERROR" in message
  assert "cuDNN" not in message and len(message) < 1000


def test_litert_convert_cli_bad_path_exits_with_one_message(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "daml_tf.inference.litert_convert",
       f"--saved_model_dir={tmp_path}/nowhere", f"--output_dir={tmp_path}/out"], cwd=REPO,
      capture_output=True, text=True, timeout=240)
  assert result.returncode == 1
  assert "nowhere" in result.stderr and "Traceback" not in result.stderr


def test_missing_flatbuffer_and_bad_precision(exported, tmp_path):
  _, _, _, litert_dir = exported
  with pytest.raises(ValueError, match="precision"):
    litert.LiteRTBackend(litert_dir, "int8")
  partial = tmp_path / "partial"
  partial.mkdir()
  (partial / litert.METADATA_FILE).write_text(
      json.dumps(litert.read_metadata(litert_dir)))
  with pytest.raises(FileNotFoundError, match="encoder.tflite"):
    litert.LiteRTBackend(str(partial))
