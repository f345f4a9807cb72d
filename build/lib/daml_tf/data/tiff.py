"""TIFF frames (the UCSD releases), decoded with Pillow: TensorFlow has no TIFF decoder."""

import io

import numpy as np
import PIL.Image


def to_rgba(contents: bytes) -> np.ndarray:
  """A TIFF file's first page as RGBA uint8 [H, W, 4], gray replicated in R, G and B.

  RGBA, as tensorflow-io's decode_tiff gave (libtiff's RGBA interface), so frames, and the
  shipped models' scores, are the same as before the move to Pillow.

  Raises:
    PIL.UnidentifiedImageError, OSError: not a readable TIFF.
  """
  if isinstance(contents, np.ndarray):  # tf.numpy_function passes a 0-d object array eagerly.
    contents = contents.item()
  with PIL.Image.open(io.BytesIO(contents)) as image:
    return np.asarray(image.convert("RGBA"))
