"""Temporal smoothing of frame scores: causal filters for live use, a centred one offline.

A spec string names the filter: "none", "ma:N" (mean of the last N scores), "ema:A"
(exponential, weight A on the newest score) or "gauss:S" (centred Gaussian of S frames; it
looks at later frames, so it is for recorded video only). Host-side NumPy.
"""

import dataclasses
from typing import Optional

import numpy as np
from scipy import ndimage

from daml_tf.errors import ConfigError

CAUSAL_KINDS = ("none", "ma", "ema")
KINDS = CAUSAL_KINDS + ("gauss",)


@dataclasses.dataclass(frozen=True)
class Smoothing:
  """A parsed smoothing spec.

  Attributes:
    kind: one of KINDS.
    value: window (ma), newest-score weight (ema) or sigma in frames (gauss); unused for none.
  """

  kind: str = "none"
  value: float = 0.0

  @property
  def causal(self) -> bool:
    return self.kind in CAUSAL_KINDS

  def __str__(self) -> str:
    return "none" if self.kind == "none" else f"{self.kind}:{self.value:g}"


def parse(spec: str) -> Smoothing:
  """Parses "none", "ma:N", "ema:A" or "gauss:S"; ConfigError (a ValueError) says what is wrong."""
  spec = (spec or "none").strip()
  if spec == "none":
    return Smoothing()
  kind, _, value = spec.partition(":")
  try:
    number = float(value)
  except ValueError:
    raise ConfigError(f"smoothing {spec!r}: expected none, ma:N, ema:A or gauss:S.") from None
  if kind == "ma" and number >= 1 and number == int(number):
    return Smoothing("ma", float(int(number)))
  if kind == "ema" and 0 < number <= 1:
    return Smoothing("ema", number)
  if kind == "gauss" and number > 0:
    return Smoothing("gauss", number)
  raise ConfigError(f"smoothing {spec!r}: expected none, ma:N (N >= 1 whole), ema:A "
                   "(0 < A <= 1) or gauss:S (S > 0).")


class CausalSmoother:
  """Smooths a stream one score at a time; an output depends only on scores seen so far.

  Until a moving average's window is full it averages the scores there are, so the first
  scored frame already has a smoothed value; an exponential filter starts at the first score.
  """

  def __init__(self, smoothing: Smoothing):
    if not smoothing.causal:
      raise ConfigError(f"smoothing {smoothing} looks at later frames; live input needs "
                       f"one of {', '.join(CAUSAL_KINDS)}.")
    self._smoothing = smoothing
    self._window = np.zeros(int(smoothing.value) if smoothing.kind == "ma" else 0)
    self.reset()

  def reset(self) -> None:
    self._count = 0
    self._state: Optional[float] = None

  def update(self, value: float) -> float:
    kind = self._smoothing.kind
    if kind == "ma":
      self._window[self._count % len(self._window)] = value
      self._count += 1
      return float(self._window[:min(self._count, len(self._window))].mean())
    if kind == "ema" and self._state is not None:
      alpha = self._smoothing.value
      self._state = alpha * value + (1.0 - alpha) * self._state
    else:
      self._state = float(value)
    return self._state


def smooth(scores: np.ndarray, smoothing: Smoothing) -> np.ndarray:
  """The smoothed scores of one video (float64)."""
  scores = np.asarray(scores, np.float64)
  if smoothing.kind == "none" or not scores.size:
    return scores
  if smoothing.kind == "gauss":
    return ndimage.gaussian_filter1d(scores, smoothing.value, mode="nearest")
  smoother = CausalSmoother(smoothing)
  return np.array([smoother.update(value) for value in scores])
