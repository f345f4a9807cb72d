"""LiteRT runtime of the streaming detector: NumPy preprocessing around two flatbuffers.

A LiteRT export (`python -m daml_tf.export --tflite`, written by
daml_tf.inference.litert_convert) is a directory holding

  encoder.tflite, encoder_fp16.tflite  frames float32 [N, H0, W0, C] in [0, 1], C the model's
                                       channels, any H0 x W0 -> latent codes [N, h, w, c]
  motion.tflite, motion_fp16.tflite    past codes float32 [B, k, h, w, c] -> predicted code
  daml_litert.json                     image size, channels, k, interval, delta, latent shape,
                                       threshold, file names
  background.npy                       the model's background (already inside the encoder)

The split of the preprocessing: the encoder flatbuffer does the bilinear resize to the model size
(TensorFlow's half-pixel-centre RESIZE_BILINEAR, so it matches training to float rounding) and
subtracts the background; this module does what depends on the camera's pixel format, scaling
to [0, 1] and gray/RGB conversion, in NumPy with tf.image's formulas. The _fp16 variants store
float16 weights (half the size) and compute in float32.

This module imports no TensorFlow: numpy and ai_edge_litert are all a device needs to run
`LiteRTBackend` (the streaming detector's backend interface: `encode(frame)`,
`predict(past_codes)`).
"""

import json
import os
from typing import Any, Dict, Optional

import numpy as np

METADATA_FILE = "daml_litert.json"
BACKGROUND_FILE = "background.npy"
ENCODER_FILES = {"float32": "encoder.tflite", "float16": "encoder_fp16.tflite"}
MOTION_FILES = {"float32": "motion.tflite", "float16": "motion_fp16.tflite"}
PRECISIONS = tuple(ENCODER_FILES)
# tf.image.rgb_to_grayscale's weights (ITU-R BT.601 luma, as TensorFlow rounds them).
_GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)


def is_litert_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, METADATA_FILE))


def read_metadata(litert_dir: str) -> Dict[str, Any]:
  """daml_litert.json of a LiteRT export; FileNotFoundError if there is none."""
  path = os.path.join(litert_dir, METADATA_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{litert_dir!r} is not a DAML LiteRT export (no {METADATA_FILE}); "
                            "write one with python -m daml_tf.export --tflite.")
  with open(path) as f:
    return json.load(f)


def to_unit_range(frame: np.ndarray, channels: int) -> np.ndarray:
  """A frame as float32 in [0, 1] with `channels` channels, as tf.image converts it.

  Integer frames are scaled by 1 / dtype max (tf.image.convert_image_dtype: a float32 multiply);
  RGB becomes gray with tf.image.rgb_to_grayscale's weights, gray is replicated to RGB.

  Args:
    frame: uint8, uint16 or float [H, W, 1|3] (alpha already dropped), or a batch of them
      [N, H, W, 1|3].
    channels: the model's channels, 1 or 3.

  Returns:
    float32 [H, W, channels] (or [N, H, W, channels]).
  """
  if np.issubdtype(frame.dtype, np.integer):
    image = frame.astype(np.float32) * np.float32(1.0 / np.iinfo(frame.dtype).max)
  else:
    image = frame.astype(np.float32, copy=False)
  if channels == 1 and image.shape[-1] == 3:
    image = (image @ _GRAY_WEIGHTS)[..., None]
  elif channels == 3 and image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return np.ascontiguousarray(image, np.float32)


class _Runner:
  """One single-input, single-output flatbuffer; resized when the input shape changes.

  A camera keeps its resolution, so the input is resized (and the tensors reallocated) once,
  not on every frame.
  """

  def __init__(self, path: str, num_threads: Optional[int] = None):
    # Deferred: the LiteRT runtime's native libraries load only when a LiteRT export is run,
    # not whenever the streaming detector is imported.
    from ai_edge_litert import interpreter  # pylint: disable=g-import-not-at-top
    if not os.path.isfile(path):
      raise FileNotFoundError(f"LiteRT model {path!r} does not exist.")
    self._interpreter = interpreter.Interpreter(model_path=path, num_threads=num_threads)
    inputs = self._interpreter.get_input_details()
    outputs = self._interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
      raise ValueError(f"{path} has {len(inputs)} inputs and {len(outputs)} outputs, expected "
                       "one of each.")
    self._input = inputs[0]["index"]
    self._output = outputs[0]["index"]
    self.input_signature = tuple(int(d) for d in inputs[0]["shape_signature"])
    self._shape = None

  def __call__(self, x: np.ndarray) -> np.ndarray:
    if x.shape != self._shape:
      self._interpreter.resize_tensor_input(self._input, x.shape, strict=True)
      self._interpreter.allocate_tensors()
      self._shape = x.shape
    self._interpreter.set_tensor(self._input, x)
    self._interpreter.invoke()
    return self._interpreter.get_tensor(self._output)


class LiteRTBackend:
  """Encoder and motion model of a LiteRT export, behind the streaming detector's interface.

  Args:
    litert_dir: the export (daml_litert.json and the flatbuffers).
    precision: "float32" or "float16" (the _fp16 flatbuffers).
    num_threads: interpreter threads (None: LiteRT's default).

  Raises:
    FileNotFoundError: not a LiteRT export, or a flatbuffer is missing.
    ValueError: unknown precision.
  """

  def __init__(self, litert_dir: str, precision: str = "float32",
               num_threads: Optional[int] = None):
    if precision not in PRECISIONS:
      raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    self.metadata = read_metadata(litert_dir)
    self.image_size = tuple(self.metadata["image_size"])
    self.channels = int(self.metadata["channels"])
    self.time_steps = int(self.metadata["time_steps"])
    self.name = f"LiteRT {precision} ({litert_dir})"
    self._encoder = _Runner(os.path.join(litert_dir, ENCODER_FILES[precision]), num_threads)
    self._motion = _Runner(os.path.join(litert_dir, MOTION_FILES[precision]), num_threads)

  def encode(self, frame: np.ndarray) -> np.ndarray:
    """[H, W, 1|3] uint8/uint16/float frame at any size -> its code float32 [1, h, w, c]."""
    return self._encoder(to_unit_range(frame, self.channels)[np.newaxis])

  def encode_batch(self, frames: np.ndarray) -> np.ndarray:
    """[N, H, W, 1|3] frames of one size -> their codes [N, h, w, c], in one invoke.

    The flatbuffers' batch dimension is free (-1 in their shape signature), so a batch resizes
    the input tensor like a new frame size does (once, while N stays the same); the codes equal
    those of frames encoded one at a time (XNNPACK computes each example alike).
    """
    return self._encoder(to_unit_range(frames, self.channels))

  def predict(self, past: np.ndarray) -> np.ndarray:
    """Codes float32 [B, k, h, w, c] -> the predicted next codes [B, h, w, c].

    Several examples run one invoke each, at batch 1: the motion model's CONV_3D is LiteRT's
    builtin kernel (XNNPACK has none), whose cost per example grows with the batch (the
    shipped Ped2 model, 1 thread: 0.82 ms at batch 1, 1.84 ms per example at batch 4, 2.29 at
    batch 8), so a loop is faster than one batched invoke.
    """
    past = np.ascontiguousarray(past, np.float32)
    if len(past) == 1:
      return self._motion(past)
    return np.concatenate([self._motion(past[row:row + 1]) for row in range(len(past))])
