"""Runtimes of the streaming detector, in one registry: each opens the directories it knows.

A runtime runs the encoder and the motion model (a `Backend`); the detector does the rest. Three
are registered in `RUNTIMES`:

  keras        a training run (config.json, checkpoints/): the restored DAML model
  saved_model  a serving export (`<export_dir>/<version>/`): its encode / predict_latent
               signatures (daml_tf.inference.serving)
  litert       a LiteRT export (`<export_dir>/litert/<version>/`): its flatbuffers, float32 or
               float16 weights (daml_tf.inference.litert)

`open_model` asks each runtime whether it recognises a directory (or the highest numbered
version below it), and the benchmark times every runtime of the registry. A new runtime is one
module with a `Runtime` subclass and one line in `RUNTIMES`.
"""

import dataclasses
import os
from typing import Any, Dict, Optional, Protocol, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from daml_tf import fileio
from daml_tf import config as config_lib
from daml_tf import errors
from daml_tf import run_dir
from daml_tf.data import motion_maps
from daml_tf.inference import litert
from daml_tf.inference import litert_convert
from daml_tf.inference import serving
from daml_tf.models import DAML
from daml_tf.models import scores


class Backend(Protocol):
  """What the streaming detector needs of a runtime: the encoder and the motion model.

  The detector validates each frame, keeps the codes and computes the score; a backend only
  runs the two networks. Implementations: `KerasBackend` (a restored DAML), `SavedModelBackend`
  (a serving export's `encode` / `predict_latent` signatures) and `litert.LiteRTBackend`
  (LiteRT flatbuffers).

  Attributes:
    name: for logs.
    image_size, channels, time_steps: the model's geometry, checked against the clip config.
  """

  name: str
  image_size: Tuple[int, int]
  channels: int
  time_steps: int

  def encode(self, frame: np.ndarray) -> np.ndarray:
    """Preprocesses one frame as training does, subtracts the background and encodes it.

    Args:
      frame: uint8, uint16 or float32 in [0, 1]; [H, W, 1|3] at any size.

    Returns:
      Its latent code, float32 [1, h, w, c].
    """

  def encode_batch(self, frames: np.ndarray) -> np.ndarray:
    """`encode` of N frames of one size and dtype in one call: [N, H, W, 1|3] -> [N, h, w, c].

    Each code equals `encode` of its frame alone to float rounding (the multi-camera detector
    batches the newest frames of its cameras through this).
    """

  def predict(self, past: np.ndarray) -> np.ndarray:
    """The motion model's prediction of the next codes: float32 [B, k, h, w, c] -> [B, h, w, c].

    Every runtime takes any B (the streaming detector passes 1, the multi-camera one a stream
    each).
    """


class GraphBackend(Protocol):
  """A Backend whose networks TensorFlow can trace into a larger graph (optional).

  The detector then runs a frame's encoder, motion model and score as one compiled call
  (graph_step), instead of three: at batch 1 the Python around each call costs about as much
  as the networks themselves.
  """

  def graph_encode(self, frames: tf.Tensor) -> tf.Tensor:
    """`encode_batch` as traceable TensorFlow ops: [N, H, W, C] frames -> [N, h, w, c] codes."""

  def graph_predict(self, past: tf.Tensor) -> tf.Tensor:
    """`predict` as traceable TensorFlow ops: [B, k, h, w, c] -> [B, h, w, c]."""


def traceable(backend) -> bool:
  """Whether `backend` offers graph_encode and graph_predict (a GraphBackend)."""
  return callable(getattr(backend, "graph_encode", None)) and callable(
      getattr(backend, "graph_predict", None))


class KerasBackend:
  """A DAML model: one preprocess+encode tf.function per (channels, dtype) of the frames.

  Args:
    model: a restored DAML with its background set.
  """

  def __init__(self, model: DAML):
    self._model = model
    self.name = "Keras"
    self.image_size = tuple(model.image_size)
    self.channels = int(model.channels)
    self.time_steps = int(model.time_steps)
    self._encoders = {}
    # reduce_retracing: the multi-camera detector's batch size changes as cameras come and go;
    # after the second size the function is traced once for any.
    self._predict = tf.function(self.graph_predict, reduce_retracing=True)

  def _encoder_for(self, channels: int, dtype: tf.DType):
    """The preprocess+encode tf.function for frames of one channel count and dtype.

    One input signature per (channels, dtype) with free batch, height and width: a camera's
    frames never retrace, one frame or a batch of several cameras' alike.
    """
    key = (channels, dtype)
    if key not in self._encoders:
      self._encoders[key] = tf.function(
          self.graph_encode,
          input_signature=[tf.TensorSpec([None, None, None, channels], dtype)])
    return self._encoders[key]

  def graph_encode(self, frames: tf.Tensor) -> tf.Tensor:
    model = self._model
    # The serving export's preprocessing, which is pipeline._decode's.
    image = serving.preprocess_frames(frames, model.image_size, model.channels)
    return model.code_of(model.encode(image - model.background, training=False))

  def graph_predict(self, past: tf.Tensor) -> tf.Tensor:
    return self._model.motion(past, training=False)

  def encode(self, frame: np.ndarray) -> np.ndarray:
    return self.encode_batch(frame[np.newaxis])

  def encode_batch(self, frames: np.ndarray) -> np.ndarray:
    encode = self._encoder_for(frames.shape[-1], tf.as_dtype(frames.dtype))
    return encode(tf.constant(frames)).numpy()

  def predict(self, past: np.ndarray) -> np.ndarray:
    return self._predict(tf.constant(past)).numpy()


class SavedModelBackend:
  """A serving export (`<export_dir>/<version>/`): its `encode` and `predict_latent` signatures.

  The encode signature takes uint8 frames only (what cameras and video decoders deliver); the
  preprocessing runs inside it.

  Args:
    saved_model_dir: the version directory.
  """

  def __init__(self, saved_model_dir: str):
    self.metadata = serving.read_metadata(saved_model_dir)
    self.name = f"SavedModel ({saved_model_dir})"
    self.image_size = tuple(self.metadata["image_size"])
    self.channels = int(self.metadata["channels"])
    self.time_steps = int(self.metadata["time_steps"])
    self._loaded = tf.saved_model.load(saved_model_dir)
    self._encode = self._loaded.signatures["encode"]
    self._predict = self._loaded.signatures["predict_latent"]

  def encode(self, frame: np.ndarray) -> np.ndarray:
    return self.encode_batch(frame[np.newaxis])

  def encode_batch(self, frames: np.ndarray) -> np.ndarray:
    if frames.dtype != np.uint8:
      raise ValueError(f"The SavedModel's encode signature takes uint8 frames, got "
                       f"{frames.dtype}; use the training run or the LiteRT export for others.")
    return self._encode(frames=tf.constant(frames))["latent"].numpy()

  def predict(self, past: np.ndarray) -> np.ndarray:
    return self._predict(past_latents=tf.constant(past))["predicted_latent"].numpy()

  def graph_encode(self, frames: tf.Tensor) -> tf.Tensor:
    if frames.dtype != tf.uint8:
      raise ValueError(f"The SavedModel's encode signature takes uint8 frames, got "
                       f"{frames.dtype.name}; use the training run or the LiteRT export for "
                       "others.")
    return self._encode(frames=frames)["latent"]

  def graph_predict(self, past: tf.Tensor) -> tf.Tensor:
    return self._predict(past_latents=past)["predicted_latent"]


@dataclasses.dataclass(frozen=True)
class RuntimeOptions:
  """What a caller may ask of the runtime that opens a model, as one value: the detectors, the
  service and the command line pass it through without knowing which runtime it is for.

  Attributes:
    precision: the weight precision, for a runtime with several (LiteRT: float32, float16);
      a runtime with one ignores it.
  """

  precision: str = "float32"

  def __post_init__(self):
    known = precisions()
    if self.precision not in known:
      raise errors.ConfigError(f"precision must be one of {known}, got {self.precision!r}.")


@dataclasses.dataclass(frozen=True)
class OpenedModel:
  """A model ready for the detector.

  Attributes:
    backend: runs the encoder and the motion model.
    data_cfg: the clip geometry (image size, channels, k, interval, delta).
    threshold: the stored threshold {"threshold", "quantile", "score"}, or None.
    score: the score the run was configured with (or the export recorded).
    motion_norm: the motion normalisation of a score of motion evidence (motion_norm.json of a
      run, or the one an export recorded), or None.
  """

  backend: Backend
  data_cfg: config_lib.DataConfig
  threshold: Optional[Dict[str, float]]
  score: str = scores.DEFAULT_SCORE
  motion_norm: Optional[motion_maps.MotionNorm] = None


class Runtime:
  """One way to run a model: what directories it opens, and how to write one (benchmark).

  Attributes:
    name: the runtime's name (benchmark rows, --runtimes).
    precisions: the weight precisions it can run; the first is the default.
  """

  name = ""
  precisions: Tuple[str, ...] = ("float32",)

  def recognises(self, path: str) -> bool:
    """Whether `path` holds a model this runtime opens."""
    raise NotImplementedError

  def open(self, path: str, precision: str = "float32", num_threads: Optional[int] = None
           ) -> OpenedModel:
    """Opens a directory this runtime recognises."""
    raise NotImplementedError

  def write(self, model: DAML, cfg: config_lib.Config, work_dir: str) -> str:
    """Writes `model` under work_dir in the form this runtime opens; returns the directory."""
    raise NotImplementedError


def _export_data_config(metadata: Dict[str, Any], path: str) -> config_lib.DataConfig:
  if "data_config" not in metadata:
    raise errors.DataError(
        f"The export {path!r} records no clip geometry (interval, delta), which streaming "
        "needs: export it again with python -m daml_tf.export.")
  known = {field.name for field in dataclasses.fields(config_lib.DataConfig)}
  return config_lib.DataConfig(
      **{name: value for name, value in metadata["data_config"].items() if name in known})



def _opened_export(backend: Backend, path: str) -> OpenedModel:
  """An export's OpenedModel from the metadata it recorded."""
  metadata = backend.metadata
  norm = metadata.get("motion_norm")
  return OpenedModel(backend, _export_data_config(metadata, path), metadata.get("threshold"),
                     metadata.get("score", scores.DEFAULT_SCORE),
                     None if norm is None else motion_maps.MotionNorm.from_dict(norm))


def _saved_model_in(model: DAML, cfg: config_lib.Config, work_dir: str) -> str:
  """A serving export of `model` under work_dir, written once for every runtime that needs it."""
  export_base = run_dir.export_dir(work_dir)
  versions = serving.version_numbers(export_base)
  if versions:
    return serving.version_dir(export_base, versions[0])
  return serving.export_serving(model, export_base, data_cfg=cfg.data,
                                score=serving.signature_score(cfg.eval.score))


class KerasRuntime(Runtime):
  """A training run's directory: its newest checkpoint restored into a float32 DAML."""

  name = "keras"

  def recognises(self, path):
    return run_dir.is_run_dir(path)

  def open(self, path, precision="float32", num_threads=None):
    cfg = run_dir.load_config(path)
    model = run_dir.restore_model(cfg, path)
    return OpenedModel(KerasBackend(model), cfg.data, run_dir.load_threshold(path),
                       cfg.eval.score, run_dir.load_motion_norm(path))

  def write(self, model, cfg, work_dir):
    path = os.path.join(work_dir, "run")
    run_dir.save_config(cfg, path)
    tf.train.Checkpoint(model=model).save(os.path.join(run_dir.checkpoint_dir(path), "ckpt"))
    return path


class SavedModelRuntime(Runtime):
  """A serving export's version directory."""

  name = "saved_model"

  def recognises(self, path):
    return serving.is_saved_model_dir(path)

  def open(self, path, precision="float32", num_threads=None):
    backend = SavedModelBackend(path)
    return _opened_export(backend, path)

  def write(self, model, cfg, work_dir):
    return _saved_model_in(model, cfg, work_dir)


class LiteRTRuntime(Runtime):
  """A LiteRT export directory."""

  name = "litert"
  precisions = litert.PRECISIONS

  def recognises(self, path):
    return litert.is_litert_dir(path)

  def open(self, path, precision="float32", num_threads=None):
    backend = litert.LiteRTBackend(path, precision, num_threads=num_threads)
    return _opened_export(backend, path)

  def write(self, model, cfg, work_dir):
    path = os.path.join(work_dir, run_dir.LITERT_SUBDIR)
    if not self.recognises(path):
      litert_convert.convert_in_subprocess(_saved_model_in(model, cfg, work_dir), path)
    return path


# Runtime name -> runtime, in the order open_model asks them.
RUNTIMES: Dict[str, Runtime] = {
    runtime.name: runtime for runtime in (KerasRuntime(), SavedModelRuntime(), LiteRTRuntime())
}


def precisions() -> Tuple[str, ...]:
  """Every weight precision a registered runtime runs (RuntimeOptions.precision)."""
  return tuple(sorted({p for runtime in RUNTIMES.values() for p in runtime.precisions}))


def find_runtime(path: str) -> Optional[Runtime]:
  """The first registered runtime that recognises `path`, or None."""
  for runtime in RUNTIMES.values():
    if runtime.recognises(path):
      return runtime
  return None


def _resolve_version(model_dir: str) -> str:
  """model_dir if a runtime recognises it, else its highest numbered version one recognises."""
  if find_runtime(model_dir) or not fileio.isdir(model_dir):
    return model_dir
  for version in serving.version_numbers(model_dir):
    path = serving.version_dir(model_dir, version)
    if find_runtime(path):
      logging.info("Using version %d of %s (the highest)", version, model_dir)
      return path
  return model_dir


def open_model(model_dir: str, options: RuntimeOptions = RuntimeOptions()) -> OpenedModel:
  """The backend, clip config and stored threshold of a run or an export.

  Args:
    model_dir: a directory a registered runtime recognises (a training run, a serving
      SavedModel version, a LiteRT export), or a directory of numbered versions of one (the
      highest is used, as TF Serving does).
    options: what to ask of the runtime (RuntimeOptions).

  Raises:
    FileNotFoundError: no runtime recognises model_dir, or a run without a checkpoint.
    errors.DataError: an export without the clip geometry.
  """
  path = _resolve_version(model_dir)
  runtime = find_runtime(path)
  if runtime is None:
    raise FileNotFoundError(
        f"{model_dir!r} is neither a training run (no {run_dir.CONFIG_FILE}) nor a serving or "
        f"LiteRT export (no saved_model.pb or {litert.METADATA_FILE}, nor numbered versions "
        "holding one).")
  precision = options.precision if options.precision in runtime.precisions else (
      runtime.precisions[0])
  return runtime.open(path, precision)
