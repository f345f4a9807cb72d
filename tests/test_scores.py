"""Score maths against hand-computed values, eagerly and inside a tf.function."""

import math

import numpy as np
import pytest
import tensorflow as tf

from daml_tf.models import scores


def _inputs():
  # One example, a 2x2 grid of 2 channels; the per-cell errors (mean over channels) are
  # 0, 1, 4 and 9 (observed = predicted + offsets).
  predicted = np.zeros((1, 2, 2, 2), np.float32)
  observed = np.array([[[[0, 0], [1, 1]], [[2, 2], [3, 3]]]], np.float32)
  return scores.ScoreInputs(predicted_latent=predicted, observed_latent=observed)


def test_latent_error_map():
  np.testing.assert_allclose(scores.latent_error_map(**{
      "predicted_latent": _inputs().predicted_latent,
      "observed_latent": _inputs().observed_latent}).numpy(), [[[0, 1], [4, 9]]])


@pytest.mark.parametrize("name, expected", [
    ("latent_mean", 3.5),            # (0 + 1 + 4 + 9) / 4
    ("latent_max", 9.0),
    ("latent_top1", 9.0),            # 1% of 4 cells rounds to one cell
    ("latent_top10", 9.0),
])
def test_reducers(name, expected):
  assert scores.compute(name, _inputs()).numpy() == pytest.approx([expected])
  graph = tf.function(lambda p, o: scores.compute(
      name, scores.ScoreInputs(predicted_latent=p, observed_latent=o)))
  assert graph(_inputs().predicted_latent, _inputs().observed_latent).numpy() == pytest.approx(
      [expected])


def test_top_fraction_averages_the_worst_cells():
  # 50% of 4 cells: the mean of 9 and 4.
  assert scores.latent_top(0.5)(_inputs()).numpy() == pytest.approx([6.5])


def test_cosine_distance():
  predicted = np.array([[1.0, 0.0], [1.0, 1.0]], np.float32).reshape(2, 1, 1, 2)
  observed = np.array([[0.0, 1.0], [2.0, 2.0]], np.float32).reshape(2, 1, 1, 2)
  value = scores.compute("cosine", scores.ScoreInputs(predicted, observed)).numpy()
  np.testing.assert_allclose(value, [1.0, 0.0], atol=1e-6)


def test_frame_psnr_is_minus_psnr():
  predicted = np.zeros((1, 2, 2, 1), np.float32)
  observed = np.full((1, 2, 2, 1), 0.1, np.float32)  # MSE 0.01: PSNR 20 dB.
  inputs = scores.ScoreInputs(predicted, predicted, predicted_frame=predicted,
                              observed_frame=observed)
  assert scores.compute("frame_psnr", inputs).numpy() == pytest.approx([-20.0], abs=1e-4)


def test_fusion_standardises_each_part_by_training_statistics():
  predicted = np.zeros((1, 2, 2, 1), np.float32)
  observed = np.full((1, 2, 2, 1), 0.1, np.float32)
  inputs = scores.ScoreInputs(predicted, observed, predicted_frame=predicted,
                              observed_frame=observed)
  stats = {"latent_mean": (0.002, 0.004), "frame_psnr": (-30.0, 5.0)}
  # latent_mean 0.01 -> (0.01 - 0.002) / 0.004 = 2; frame_psnr -20 -> (-20 + 30) / 5 = 2.
  assert scores.compute("fusion", inputs, stats).numpy() == pytest.approx([4.0], abs=1e-4)
  with pytest.raises(ValueError, match="score_stats.json"):
    scores.compute("fusion", inputs)


def test_unknown_score_names_the_choices():
  with pytest.raises(ValueError, match="latent_mean"):
    scores.get_score("nope")
