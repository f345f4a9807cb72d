"""The TF Serving SavedModel: camera frames in, anomaly scores (or latent codes) out.

`export_serving` writes `<export_dir>/<version>/` (saved_model.pb, variables/, assets/), the
layout TF Serving watches: it loads the highest numeric version and ignores other names, so a
version is written under a temporary name and renamed when complete (on local file systems).

Signatures (k = time_steps, [h, w, c] = the shape of a frame's code: the latent code's, or for
a motion model that reads finer levels too the code of `DAML.code_of`; "latent" names it all the
same):

  serving_default: clip uint8 [B, k+1, H0, W0, C0] -> score float32 [B]
  encode: frames uint8 [N, H0, W0, C0] -> latent float32 [N, h, w, c]
  predict_latent: past_latents float32 [B, k, h, w, c] -> predicted_latent float32 [B, h, w, c]
    ([B, h, w, H*c] for a motion model of H heads, e.g. --motion=two_horizon)
  score_latents: latents float32 [B, k+1, h, w, c] -> score float32 [B]

Frames come at camera resolution: H0 and W0 are free and the graph resizes them. C0 is free too
and handled in the graph as training's decoder handles a decoded image (`pipeline.to_channels`):
1 = gray, 2 = gray + alpha, 3 = RGB, 4 = RGBA; alpha is dropped, then RGB becomes gray
(tf.image.rgb_to_grayscale) for a gray model or gray is replicated for an RGB one. So one export
serves gray and colour cameras, and every image training could read is preprocessed the same
way. The steps are pipeline._decode's, in its order: [0, 1] scaling (convert_image_dtype),
channels, bilinear resize to the model size; then the model's background is subtracted.

The graph is always float32: a model trained under a mixed-precision policy is rebuilt under
float32 and its weights copied (`models.build.float32_copy`). Only the encoder, the motion model
and the background are exported; the decoder plays no part in scoring.

`assets/daml_export.json` records the geometry a streaming client needs (image size, channels,
k, interval, delta, latent shape) and the alarm threshold when one was given. The extra
non-signature function `encode_float` (float32 frames in [0, 1] with the model's channels, at
any size -> latent) is what the LiteRT encoder is converted from
(daml_tf.inference.litert_convert).
"""

import dataclasses
import json
import os
import re
import tempfile
from typing import Any, Dict, List, Mapping, Optional

from absl import logging
import tensorflow as tf

from daml_tf import errors
from daml_tf import fileio
from daml_tf.data import pipeline
from daml_tf.models import DAML
from daml_tf.models import build
from daml_tf.models.daml import map_frames
from daml_tf.models import scores

METADATA_FILE = "daml_export.json"
SIGNATURES = ("serving_default", "encode", "predict_latent", "score_latents")
# Bumped when a signature or the metadata changes incompatibly.
EXPORT_FORMAT = 1


def preprocess_frames(frames: tf.Tensor, image_size, channels: int) -> tf.Tensor:
  """Camera frames -> model frames, as training decodes images (pipeline._decode).

  Args:
    frames: [N, H0, W0, C0] uint8 (or uint16, or float in [0, 1]); C0 in 1..4, known only at
      run time (alpha, C0 = 2 or 4, is dropped).
    image_size: (height, width) of the model.
    channels: the model's channels, 1 or 3.

  Returns:
    float32 [N, height, width, channels] in [0, 1] (not background subtracted).
  """
  image = tf.image.convert_image_dtype(frames, tf.float32)
  n = tf.shape(image)[-1]
  # A client's mistake should come back as this message, not as a shape error deep inside.
  check = tf.debugging.Assert(
      tf.logical_and(n >= 1, n <= 4),
      ["frames must have 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels, got", n])
  with tf.control_dependencies([check]):
    image = pipeline.to_channels(image, channels)
  return tf.image.resize(image, image_size, method=tf.image.ResizeMethod.BILINEAR)


class ServingModule(tf.Module):
  """The exported object: the four signatures plus `encode_float` over a float32 DAML.

  Args:
    model: a float32 DAML (see models.build.float32_copy).
    metadata_path: a JSON file saved as the asset daml_export.json.
    score: the score of serving_default and score_latents (a latent score of
      daml_tf.models.scores; the export holds no decoder).
  """

  def __init__(self, model: DAML, metadata_path: Optional[str] = None,
               score: str = scores.DEFAULT_SCORE):
    super().__init__(name="daml_serving")
    try:
      scores.check_runtime(score, has_decoder=False)
    except ValueError as error:
      raise errors.ExportError(f"Cannot export --score={score}: {error}") from None
    self._score_name = score
    self.encoder = model.encoder
    self.motion = model.motion
    # A plain tf.Variable: stored in variables/ and independent of Keras on loading.
    self.background = tf.Variable(model.background.numpy(), trainable=False, name="background")
    if metadata_path:
      self.metadata = tf.saved_model.Asset(metadata_path)
    self._image_size = tuple(model.image_size)
    self._channels = int(model.channels)
    self._k = int(model.time_steps)
    # The code a frame is cached as: the latent code, or more (models.build, code_of).
    latent = tuple(int(d) for d in model.code_shape)
    k = self._k
    self.serving_default = tf.function(self._score_clip, input_signature=[
        tf.TensorSpec([None, k + 1, None, None, None], tf.uint8, name="clip")])
    self.encode = tf.function(self._encode, input_signature=[
        tf.TensorSpec([None, None, None, None], tf.uint8, name="frames")])
    self.predict_latent = tf.function(self._predict_latent, input_signature=[
        tf.TensorSpec((None, k) + latent, tf.float32, name="past_latents")])
    self.score_latents = tf.function(self._score_latents, input_signature=[
        tf.TensorSpec((None, k + 1) + latent, tf.float32, name="latents")])
    self.encode_float = tf.function(self._encode_float, input_signature=[
        tf.TensorSpec([None, None, None, self._channels], tf.float32, name="frames")])

  def signature_functions(self) -> Dict[str, Any]:
    """{signature key: tf.function}, for tf.saved_model.save's `signatures`."""
    return {name: getattr(self, name) for name in SIGNATURES}

  def _latents(self, model_frames):
    return self.motion.code_of(self.encoder(model_frames - self.background, training=False))

  def _codes_of(self, frames):
    return self._latents(preprocess_frames(frames, self._image_size, self._channels))

  def _encode(self, frames):
    return {"latent": self._codes_of(frames)}

  def _encode_float(self, frames):
    image = tf.image.resize(frames, self._image_size, method=tf.image.ResizeMethod.BILINEAR)
    return {"latent": self._latents(image)}

  def _predict_latent(self, past_latents):
    return {"predicted_latent": self.motion(past_latents, training=False)}

  def _score(self, latents):
    predicted = self.motion(latents[:, :self._k], training=False)
    return scores.compute(self._score_name,
                          scores.ScoreInputs(predicted, latents[:, self._k]))

  def _score_latents(self, latents):
    return {"score": self._score(latents)}

  def _score_clip(self, clip):
    # Every frame of every clip is encoded in one batch, as DAML.call does.
    return {"score": self._score(map_frames(self._codes_of, clip))}


def make_metadata(model: DAML, data_cfg=None,
                  threshold: Optional[Mapping[str, float]] = None,
                  score: str = scores.DEFAULT_SCORE, motion_norm=None) -> Dict[str, Any]:
  """The contents of daml_export.json.

  Args:
    model: the exported model.
    data_cfg: its config.DataConfig; without it the export lacks interval and delta, which a
      streaming client needs (serving_default and score_latents do not).
    threshold: {"threshold": ..., "quantile": ...} as in threshold.json, or None.
    score: the run's score; for a score of motion evidence the signatures compute the paper's
      score (`signature_score`) and a streaming client weights the error by the motion maps.
    motion_norm: the motion normalisation (data.motion_maps.MotionNorm) of a motion score.
  """
  metadata = {
      "format": EXPORT_FORMAT,
      "image_size": list(model.image_size),
      "channels": int(model.channels),
      "time_steps": int(model.time_steps),
      "latent_shape": [int(d) for d in model.latent_shape],
      "code_shape": [int(d) for d in model.code_shape],
      "signatures": list(SIGNATURES),
      "threshold": dict(threshold) if threshold else None,
      "score": score,
      "signature_score": signature_score(score),
      "motion_norm": motion_norm.to_dict() if motion_norm is not None else None,
  }
  if data_cfg is not None:
    metadata.update(interval=int(data_cfg.interval), delta=int(data_cfg.delta),
                    clip_span=int(data_cfg.clip_span),
                    data_config=dataclasses.asdict(data_cfg))
  return metadata


def version_numbers(export_dir: str) -> List[int]:
  """The numeric versions under export_dir, highest first (TF Serving serves the first)."""
  if not fileio.isdir(export_dir):
    return []
  return sorted((int(name.rstrip("/")) for name in fileio.listdir(export_dir)
                 if re.fullmatch(r"\d+", name.rstrip("/"))), reverse=True)


def next_version(export_dir: str) -> int:
  """One more than the highest numeric version under export_dir (1 if there is none)."""
  return max(version_numbers(export_dir), default=0) + 1


def version_dir(export_dir: str, version: int) -> str:
  return os.path.join(export_dir, str(int(version)))


def check_version_free(export_dir: str, version: int) -> str:
  """The version's directory; ExportError if it exists (an export is never overwritten)."""
  if version < 1:
    raise errors.ExportError(f"--version must be >= 1, got {version}.")
  path = version_dir(export_dir, version)
  if fileio.exists(path):
    raise errors.ExportError(
        f"{path} already exists: refusing to overwrite version {version}. Pass another "
        f"--version (the next free one is {next_version(export_dir)}) or remove it.")
  return path


def signature_score(score: str) -> str:
  """The score the scoring signatures compute for a run of `score`: the score itself, or the
  paper's for a score of motion evidence (the motion maps come from the camera frames, on the
  client's side, and the signatures keep their inputs)."""
  return scores.DEFAULT_SCORE if scores.get_score(score).needs_motion else score


def export_serving(model: DAML, export_dir: str, version: Optional[int] = None, data_cfg=None,
                   threshold: Optional[Mapping[str, float]] = None,
                   score: str = scores.DEFAULT_SCORE, motion_norm=None) -> str:
  """Writes the serving SavedModel as `<export_dir>/<version>/`.

  Args:
    model: a DAML of any dtype policy (a float32 copy is exported).
    export_dir: the model's base path for TF Serving (created if needed).
    version: the version number; None takes the next free one (1 in a new directory), so a
      resumed training run adds a version instead of failing.
    data_cfg: the run's config.DataConfig, recorded for streaming clients (interval, delta).
    threshold: the alarm threshold ({"threshold", "quantile"}), recorded when given.
    score: the score of the scoring signatures (a latent score), recorded too.
    motion_norm: a motion score's normalisation, recorded (see make_metadata).

  Returns:
    The version directory.

  Raises:
    errors.ExportError: the version directory exists (nothing is overwritten), or the score
      needs the decoder.
  """
  if version is None:
    version = next_version(export_dir)
  final_dir = check_version_free(export_dir, version)
  with tempfile.TemporaryDirectory() as scratch:
    metadata_path = os.path.join(scratch, METADATA_FILE)
    with open(metadata_path, "w") as f:
      json.dump(make_metadata(model, data_cfg, threshold, score, motion_norm), f, indent=2,
                sort_keys=True)
    module = ServingModule(build.float32_copy(model), metadata_path, signature_score(score))
    fileio.write_atomically(final_dir, lambda path: tf.saved_model.save(
        module, path, signatures=module.signature_functions()), directory=True)
  logging.info("Serving SavedModel (signatures %s) written to %s", ", ".join(SIGNATURES),
               final_dir)
  return final_dir


def is_saved_model_dir(path: str) -> bool:
  return fileio.exists(os.path.join(path, "saved_model.pb"))


def read_metadata(saved_model_dir: str) -> Dict[str, Any]:
  """daml_export.json of a version directory; FileNotFoundError if it has none."""
  path = os.path.join(saved_model_dir, "assets", METADATA_FILE)
  if not fileio.exists(path):
    raise FileNotFoundError(
        f"{saved_model_dir!r} is not a DAML serving export (no assets/{METADATA_FILE}); "
        "export one with python -m daml_tf.export.")
  with fileio.GFile(path) as f:
    return json.load(f)


def find_version_dir(path: str) -> Optional[str]:
  """The serving export at `path`: `path` itself when it is a version directory, else its
  highest numbered version that is one; None when there is none."""
  path = path.rstrip("/")
  if is_saved_model_dir(path):
    return path
  for version in version_numbers(path):
    if is_saved_model_dir(version_dir(path, version)):
      return version_dir(path, version)
  return None


def read_weights(saved_model_dir: str, model: DAML) -> None:
  """Loads an export's encoder and motion model weights into `model`; its decoder is untouched.

  The SavedModel's variables/ is an object-based checkpoint whose root is the ServingModule, so
  its `encoder` and `motion` children restore into the Keras parts of the same names, as a
  training checkpoint restores through DAML's. The decoder is not in an export.

  Raises:
    ValueError or AssertionError: the export's weights do not fit the model (another
      architecture).
  """
  variables = os.path.join(saved_model_dir, tf.saved_model.VARIABLES_DIRECTORY,
                           tf.saved_model.VARIABLES_FILENAME)
  tf.train.Checkpoint(encoder=model.encoder, motion=model.motion).read(
      variables).expect_partial().assert_existing_objects_matched()
