"""The TF Serving export: layout, signatures, numerics in a fresh process, mixed precision.

The model is an untrained tiny DAML (random weights, randomised BatchNorm statistics so no layer
is an identity), checkpointed into a run directory as training would leave it: export numerics
do not depend on training, and building it takes a second instead of a training run.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import testing
from testing import CAMERA, HEIGHT, K, LATENT, WIDTH, camera_frames
from daml_tf import errors
from daml_tf.evaluation import scoring as evaluation
from daml_tf.data import pipeline
from daml_tf.inference import backends
from daml_tf.inference import serving
from daml_tf.inference import streaming
from daml_tf.models import build
from daml_tf.models.scores import latent_error

REPO = pathlib.Path(__file__).resolve().parents[1]
THRESHOLD = {"threshold": 0.123, "quantile": 0.99}
# Keras vs the export of the same weights (same ops, other batch shapes).
RTOL, ATOL = 1e-5, 1e-6




def decode_like_training(frames, folder):
  """Frames through PNG files and the training decoder (pipeline.decode_frame)."""
  os.makedirs(folder, exist_ok=True)
  mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[frames.shape[-1]]
  decoded = []
  for i, frame in enumerate(frames):
    path = os.path.join(folder, f"{i}.png")
    Image.fromarray(frame[..., 0] if mode == "L" else frame, mode).save(path)
    decoded.append(pipeline.decode_frame(tf.constant(path), (HEIGHT, WIDTH), 1).numpy())
  return np.stack(decoded)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("run")
  cfg, model = testing.make_run(model_dir, THRESHOLD, seed=0)
  return str(model_dir), cfg, model


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
  _, cfg, model = run
  export_dir = str(tmp_path_factory.mktemp("export"))
  version_dir = serving.export_serving(model, export_dir, version=1, data_cfg=cfg.data,
                                       threshold=THRESHOLD)
  return export_dir, version_dir


def test_layout_metadata_and_no_overwrite(run, exported):
  _, cfg, model = run
  export_dir, version_dir = exported
  assert version_dir == os.path.join(export_dir, "1")
  for name in ("saved_model.pb", "variables/variables.index", "assets/daml_export.json"):
    assert os.path.isfile(os.path.join(version_dir, name)), name
  metadata = serving.read_metadata(version_dir)
  assert metadata["image_size"] == [HEIGHT, WIDTH] and metadata["channels"] == 1
  assert (metadata["time_steps"], metadata["interval"], metadata["delta"]) == (K, 2, 1)
  assert metadata["latent_shape"] == list(LATENT)
  assert metadata["threshold"] == THRESHOLD
  assert metadata["data_config"] == json.loads(json.dumps(vars(cfg.data)))

  before = sorted(p.name for p in pathlib.Path(version_dir).rglob("*"))
  with pytest.raises(errors.ExportError, match=r"already exists.*next free one is 2"):
    serving.export_serving(model, export_dir, version=1)
  assert sorted(p.name for p in pathlib.Path(version_dir).rglob("*")) == before
  # No version given: the next free one, so a resumed training run adds a version.
  assert serving.export_serving(model, export_dir) == os.path.join(export_dir, "2")
  # Nothing but the versions is left behind (the temporary directory was renamed).
  assert sorted(os.listdir(export_dir)) == ["1", "2"]
  assert backends._resolve_version(export_dir) == os.path.join(export_dir, "2")


def _signature_blocks(text):
  blocks = {}
  for name, body in re.findall(r"signature_def\['(\w+)'\]:(.*?)Method name is", text, re.S):
    tensors = re.findall(r"(inputs|outputs)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+"
                         r"shape: (\([^)]*\))", body)
    blocks[name] = {(kind, key): (dtype, shape) for kind, key, dtype, shape in tensors}
  return blocks


def test_saved_model_cli_lists_the_four_signatures(exported):
  _, version_dir = exported
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  result = subprocess.run([cli, "show", "--dir", version_dir, "--all"], capture_output=True,
                          text=True, timeout=240, check=True)
  blocks = _signature_blocks(result.stdout)
  latent = ", ".join(str(d) for d in LATENT)
  assert blocks["serving_default"] == {
      ("inputs", "clip"): ("DT_UINT8", f"(-1, {K + 1}, -1, -1, -1)"),
      ("outputs", "score"): ("DT_FLOAT", "(-1)")}
  assert blocks["encode"] == {
      ("inputs", "frames"): ("DT_UINT8", "(-1, -1, -1, -1)"),
      ("outputs", "latent"): ("DT_FLOAT", f"(-1, {latent})")}
  assert blocks["predict_latent"] == {
      ("inputs", "past_latents"): ("DT_FLOAT", f"(-1, {K}, {latent})"),
      ("outputs", "predicted_latent"): ("DT_FLOAT", f"(-1, {latent})")}
  assert blocks["score_latents"] == {
      ("inputs", "latents"): ("DT_FLOAT", f"(-1, {K + 1}, {latent})"),
      ("outputs", "score"): ("DT_FLOAT", "(-1)")}


_FRESH_PROCESS = """
import sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
inputs = np.load(sys.argv[2])
sig = loaded.signatures
outputs = {"score": sig["serving_default"](clip=tf.constant(inputs["clip"]))["score"],
           "predicted": sig["predict_latent"](
               past_latents=tf.constant(inputs["past"]))["predicted_latent"],
           "latent_score": sig["score_latents"](latents=tf.constant(inputs["latents"]))["score"]}
for c in (1, 2, 3, 4):
  outputs[f"codes_{c}"] = sig["encode"](frames=tf.constant(inputs[f"frames_{c}"]))["latent"]
np.savez(sys.argv[3], **{name: value.numpy() for name, value in outputs.items()})
"""


def test_fresh_process_reproduces_keras(run, exported, tmp_path):
  _, _, model = run
  _, version_dir = exported
  background = model.background.numpy()
  rng = np.random.default_rng(1)
  # Two RGB camera clips: resized and converted to gray in the graph.
  clip = camera_frames(2 * (K + 1), 3).reshape((2, K + 1) + CAMERA + (3,))
  inputs = {"clip": clip,
            "past": rng.normal(0, 0.5, (2, K) + LATENT).astype("float32"),
            "latents": rng.normal(0, 0.5, (3, K + 1) + LATENT).astype("float32")}
  for channels in (1, 2, 3, 4):
    inputs[f"frames_{channels}"] = camera_frames(3, channels, seed=channels)
  np.savez(tmp_path / "inputs.npz", **inputs)
  subprocess.run([sys.executable, "-c", _FRESH_PROCESS, version_dir,
                  str(tmp_path / "inputs.npz"), str(tmp_path / "outputs.npz")],
                 check=True, cwd=REPO, timeout=240)
  got = np.load(tmp_path / "outputs.npz")

  decoded = decode_like_training(clip.reshape((-1,) + CAMERA + (3,)), tmp_path / "clip")
  expected = model(decoded.reshape((2, K + 1, HEIGHT, WIDTH, 1)) - background).numpy()
  np.testing.assert_allclose(got["score"], expected, rtol=RTOL, atol=ATOL)
  assert got["score"].dtype == np.float32
  for channels in (1, 2, 3, 4):
    # Gray, gray + alpha, RGB, RGBA: each preprocessed as the training decoder reads it.
    decoded = decode_like_training(inputs[f"frames_{channels}"], tmp_path / str(channels))
    expected = model.encode(decoded - background)[-1].numpy()
    np.testing.assert_allclose(got[f"codes_{channels}"], expected, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(got["predicted"], model.motion(inputs["past"]).numpy(),
                             rtol=RTOL, atol=ATOL)
  latents = inputs["latents"]
  expected = latent_error(model.motion(latents[:, :K]), latents[:, K]).numpy()
  np.testing.assert_allclose(got["latent_score"], expected, rtol=RTOL, atol=ATOL)
  assert np.ptp(got["score"]) > 0 and np.ptp(got["latent_score"]) > 0


def test_mixed_precision_model_exports_float32(run, tmp_path):
  _, cfg, model = run
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    mixed = build.build_model(cfg)
  finally:
    keras.mixed_precision.set_global_policy(previous)
  mixed.set_weights(model.get_weights())
  frames = camera_frames(2, 1, size=(HEIGHT, WIDTH))
  model_frames = frames.astype("float32") / np.float32(255) - model.background.numpy()
  assert mixed.encode(model_frames)[-1].dtype == "float16"  # The test is not vacuous.

  version_dir = serving.export_serving(mixed, str(tmp_path / "export"), data_cfg=cfg.data)
  assert keras.mixed_precision.global_policy().name == previous.name
  loaded = tf.saved_model.load(version_dir)
  for name in serving.SIGNATURES:
    signature = loaded.signatures[name]
    for spec in signature.structured_outputs.values():
      assert spec.dtype == tf.float32, name
    for spec in signature.structured_input_signature[1].values():
      assert spec.dtype in (tf.uint8, tf.float32), name
  codes = loaded.signatures["encode"](frames=tf.constant(frames))["latent"].numpy()
  # Exactly the float32 model's codes: the export ran none of the float16 arithmetic.
  np.testing.assert_allclose(codes, model.encode(model_frames)[-1].numpy(), rtol=RTOL,
                             atol=ATOL)


def test_rest_request_matches_the_signature(run, exported):
  """The body of TF Serving's REST predict API (row format), decoded as TF Serving decodes it,
  fits the serving signature and gives the Keras model's score."""
  _, _, model = run
  _, version_dir = exported
  loaded = tf.saved_model.load(version_dir)
  signature = loaded.signatures["serving_default"]
  (input_key, spec), = signature.structured_input_signature[1].items()
  clip = camera_frames(K + 1, 3, seed=5)[np.newaxis]

  body = json.loads(json.dumps({"signature_name": "serving_default",
                                "instances": clip.tolist()}))
  assert body["signature_name"] in loaded.signatures
  # TF Serving stacks the instances and casts them to the input's dtype.
  tensor = tf.constant(np.asarray(body["instances"]), dtype=spec.dtype)
  assert input_key == "clip" and spec.dtype == tf.uint8
  assert spec.shape.is_compatible_with(tensor.shape) and tensor.shape == [1, K + 1, *CAMERA, 3]
  score = signature(**{input_key: tensor})["score"].numpy()
  # The same clip through the serving preprocessing and the Keras model.
  frames = serving.preprocess_frames(tf.constant(clip[0]), (HEIGHT, WIDTH), 1)
  expected = model((frames - model.background)[tf.newaxis]).numpy()
  np.testing.assert_allclose(score, expected, rtol=RTOL, atol=ATOL)


def test_detector_on_the_saved_model_matches_keras(run, exported):
  _, cfg, model = run
  _, version_dir = exported
  frames = camera_frames(12, 3, seed=3)
  keras_detector = streaming.StreamingDetector(model, cfg.data)
  expected = [keras_detector.process(frame).score for frame in frames]
  detector = streaming.StreamingDetector.from_model_dir(version_dir)
  assert isinstance(detector.backend, backends.SavedModelBackend)
  assert detector.threshold == THRESHOLD["threshold"]
  assert detector.data_cfg == cfg.data
  got = [detector.process(frame).score for frame in frames]
  span = cfg.data.clip_span
  assert got[:span] == [None] * span
  np.testing.assert_allclose(got[span:], expected[span:], rtol=RTOL, atol=1e-8)
  with pytest.raises(ValueError, match="uint8"):
    detector.process(frames[0].astype(np.float32) / 255)


@pytest.mark.parametrize("score", ["latent_max", "latent_top10", "cosine"])
def test_every_runtime_gives_the_configured_score(run, tmp_path, score):
  """evaluate's scorer, the Keras detector and an export of --score=<score> agree."""
  _, cfg, model = run
  frames = camera_frames(12, 3, seed=4)
  keras_detector = streaming.StreamingDetector(model, cfg.data, score=score)
  keras_scores = [keras_detector.process(f).score for f in frames]
  version_dir = serving.export_serving(model, str(tmp_path), version=1, data_cfg=cfg.data,
                                       score=score)
  assert serving.read_metadata(version_dir)["score"] == score
  detector = streaming.StreamingDetector.from_model_dir(version_dir)
  assert detector.score_name == score
  span = cfg.data.clip_span
  exported = [detector.process(f).score for f in frames]
  np.testing.assert_allclose(exported[span:], keras_scores[span:], rtol=RTOL, atol=1e-8)
  # The batch scorer of evaluate and calibrate, on the same preprocessed frames.
  decoded = decode_like_training(frames, tmp_path / "frames") - model.background.numpy()
  _, batch_scores = evaluation.VideoScorer(model, cfg.data, 4, score).score(decoded)
  np.testing.assert_allclose(batch_scores, keras_scores[span:], rtol=1e-4, atol=1e-7)
  # serving_default scores whole clips with the same score.
  loaded = tf.saved_model.load(version_dir).signatures["serving_default"]
  clip = np.stack([frames[[t - cfg.data.delta - (K - 1 - i) * cfg.data.interval
                           for i in range(K)] + [t]] for t in (span, span + 1)])
  np.testing.assert_allclose(loaded(clip=tf.constant(clip))["score"].numpy(),
                             keras_scores[span:span + 2], rtol=1e-4, atol=1e-7)


def test_scores_that_decode_a_frame_are_not_exported(run, tmp_path):
  _, cfg, model = run
  with pytest.raises(errors.ExportError, match="frame_psnr"):
    serving.export_serving(model, str(tmp_path), version=1, data_cfg=cfg.data,
                           score="frame_psnr")
