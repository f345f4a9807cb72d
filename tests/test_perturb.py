"""The brightness perturbation against colorsys, eagerly and inside tf.data."""

import colorsys

import numpy as np
import pytest
import tensorflow as tf

from daml_tf.data import perturb


def colorsys_reference(frames, factor):
  out = np.empty_like(frames)
  for index in np.ndindex(frames.shape[:-1]):
    hue, lightness, saturation = colorsys.rgb_to_hls(*frames[index])
    out[index] = colorsys.hls_to_rgb(hue, lightness * factor, saturation)
  return out


@pytest.mark.parametrize("factor", [0.2, 0.5, 0.9])
def test_rgb_matches_colorsys(factor):
  frames = np.random.default_rng(0).uniform(size=(2, 5, 7, 3)).astype("float32")
  frames[0, 0, 0] = [0, 0, 0]  # Black: no chroma.
  frames[0, 0, 1] = [1, 1, 1]  # White.
  frames[0, 0, 2] = [0.9, 0.95, 1.0]  # Light: L > 0.5, where the chroma span shrinks.
  np.testing.assert_allclose(perturb.scale_lightness(frames, factor).numpy(),
                             colorsys_reference(frames, factor), atol=1e-5)


def test_gray_is_a_product():
  frames = np.array([[[0.0], [0.5]], [[0.8], [1.0]]], "float32")
  np.testing.assert_allclose(perturb.scale_lightness(frames, 0.5).numpy(),
                             [[[0.0], [0.25]], [[0.4], [0.5]]])


def test_same_inside_tf_data():
  frames = np.random.default_rng(1).uniform(size=(4, 6, 8, 3)).astype("float32")
  eager = perturb.scale_lightness(frames, 0.3).numpy()
  mapped = np.stack(list(tf.data.Dataset.from_tensor_slices(frames).map(
      lambda f: perturb.scale_lightness(f, 0.3)).as_numpy_iterator()))
  np.testing.assert_allclose(mapped, eager, atol=1e-7)


def test_parse():
  assert perturb.parse_perturbation("") is None
  assert perturb.parse_perturbation("brightness:0.4") == perturb.Brightness(0.4)
  for bad in ("brightness", "brightness:0", "brightness:1.5", "contrast:0.5", "brightness:x"):
    with pytest.raises(perturb.PerturbationError, match="brightness:<factor>"):
      perturb.parse_perturbation(bad)
