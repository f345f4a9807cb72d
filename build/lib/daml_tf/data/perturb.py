"""Test-time perturbations for robustness experiments (the paper's darkened test frames)."""

import dataclasses
from typing import Optional

import tensorflow as tf


class PerturbationError(ValueError):
  """A --perturb value that cannot be parsed; the message shows the accepted form."""


@dataclasses.dataclass(frozen=True)
class Brightness:
  """Scales the HLS lightness of every pixel by `factor`, keeping hue and saturation."""

  factor: float

  def __call__(self, frames: tf.Tensor) -> tf.Tensor:
    return scale_lightness(frames, self.factor)


def parse_perturbation(text: str) -> Optional[Brightness]:
  """'' -> None; 'brightness:<factor>' with 0 < factor <= 1 -> Brightness(factor)."""
  if not text:
    return None
  kind, _, value = text.partition(":")
  try:
    factor = float(value)
  except ValueError:
    factor = None
  if kind != "brightness" or factor is None or not 0 < factor <= 1:
    raise PerturbationError(
        f"--perturb must be brightness:<factor> with 0 < factor <= 1, got {text!r}.")
  return Brightness(factor)


def scale_lightness(frames, factor: float) -> tf.Tensor:
  """Multiplies the HLS lightness L of [..., C] frames in [0, 1] by `factor` (C = 1 or 3).

  In HLS, L = (max + min) / 2 and the chroma is C = (1 - |2L - 1|) * S, and every channel is
  L plus a hue-dependent multiple of C. Keeping hue and saturation while L becomes L' therefore
  scales each channel's offset from L by (1 - |2L' - 1|) / (1 - |2L - 1|); no hue needs to be
  computed. A gray pixel has no offset, so for one-channel frames this is a plain product.
  """
  frames = tf.convert_to_tensor(frames, tf.float32)
  if frames.shape[-1] == 1:
    return frames * factor
  lightness = (tf.reduce_max(frames, axis=-1, keepdims=True) +
               tf.reduce_min(frames, axis=-1, keepdims=True)) / 2
  new_lightness = lightness * factor
  old_span = 1.0 - tf.abs(2.0 * lightness - 1.0)
  new_span = 1.0 - tf.abs(2.0 * new_lightness - 1.0)
  # Black and white pixels (old_span 0) have no chroma to rescale.
  ratio = tf.math.divide_no_nan(new_span, old_span)
  return tf.clip_by_value(new_lightness + (frames - lightness) * ratio, 0.0, 1.0)
