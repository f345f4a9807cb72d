"""Smoothing filters against hand-computed values; causal ones never look ahead."""

import numpy as np
import pytest

from daml_tf import smoothing


@pytest.mark.parametrize("spec, expected", [
    ("none", [1, 3, 5, 7]),
    ("ma:2", [1, 2, 4, 6]),
    ("ema:0.5", [1, 2, 3.5, 5.25]),
])
def test_causal_filters(spec, expected):
  np.testing.assert_allclose(smoothing.smooth([1, 3, 5, 7], smoothing.parse(spec)), expected)


def test_moving_average_hand_computed_and_reset():
  smoother = smoothing.CausalSmoother(smoothing.parse("ma:3"))
  got = [smoother.update(v) for v in (1.0, 2.0, 3.0, 4.0, 10.0)]
  np.testing.assert_allclose(got, [1.0, 1.5, 2.0, 3.0, 17.0 / 3.0])
  smoother.reset()
  assert smoother.update(5.0) == 5.0


@pytest.mark.parametrize("spec", ["ma:3", "ema:0.3"])
def test_causal_filters_never_look_ahead(spec):
  rng = np.random.default_rng(0)
  scores = rng.random(50)
  changed = scores.copy()
  changed[30:] += 10.0
  before = smoothing.smooth(scores, smoothing.parse(spec))
  after = smoothing.smooth(changed, smoothing.parse(spec))
  np.testing.assert_array_equal(before[:30], after[:30])
  assert not np.allclose(before[30:], after[30:])


def test_gaussian_is_centred_and_offline_only():
  impulse = np.zeros(11)
  impulse[5] = 1.0
  smoothed = smoothing.smooth(impulse, smoothing.parse("gauss:1"))
  np.testing.assert_allclose(smoothed[:5], smoothed[10:5:-1])  # symmetric around the impulse
  assert smoothed[4] > 0  # it looks ahead
  with pytest.raises(ValueError, match="later frames"):
    smoothing.CausalSmoother(smoothing.parse("gauss:1"))


@pytest.mark.parametrize("spec", ["ma:0", "ma:1.5", "ema:0", "ema:2", "gauss:-1", "box:3", "ma"])
def test_bad_specs_are_rejected(spec):
  with pytest.raises(ValueError, match="expected none"):
    smoothing.parse(spec)
