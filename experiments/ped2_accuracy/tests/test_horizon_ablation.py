"""experiments/ped2_accuracy/horizon_ablation.py: its clip tables against hand-made index lists, its summary against
hand-computed values, and one short fit of a motion model on frozen codes."""

import os

from absl import app
import numpy as np
import pytest

from experiments.ped2_accuracy import horizon_ablation as horizon


def test_clips_from_keeps_the_targets_every_horizon_can_predict():
  # 12 frames, k=2 inputs 2 apart, target 3 after the last: rows [j, j+2, j+5], j = 0..6.
  np.testing.assert_array_equal(
      horizon.clips_from(12, time_steps=2, interval=2, delta=3, first_target=8),
      [[3, 5, 8], [4, 6, 9], [5, 7, 10], [6, 8, 11]])


def test_stacked_clips_index_the_concatenated_codes_without_crossing_videos():
  np.testing.assert_array_equal(
      horizon.stacked_clips([6, 7], time_steps=2, interval=1, delta=2),
      [[0, 1, 3], [1, 2, 4], [2, 3, 5],
       [6, 7, 9], [7, 8, 10], [8, 9, 11], [9, 10, 12]])


def test_parse_variant_reads_level_inputs_horizon_and_seed_offset():
  latent = horizon.LATENT
  assert horizon.parse_variant("d8", time_steps=4) == (4, 8, 0, latent)
  assert horizon.parse_variant("k6d4", time_steps=4) == (6, 4, 0, latent)
  assert horizon.parse_variant("d4s1", time_steps=4) == (4, 4, 1, latent)
  assert horizon.parse_variant("l0d4", time_steps=4) == (4, 4, 0, 0)
  assert horizon.parse_variant("l1k6d8s2", time_steps=4) == (6, 8, 2, 1)
  with pytest.raises(app.UsageError):
    horizon.parse_variant("8", time_steps=4)


def test_sum_of_parts_divides_each_part_by_its_scale():
  first = [np.array([1.0, 2.0]), np.array([4.0])]
  second = [np.array([10.0, 30.0]), np.array([20.0])]
  summed = horizon.sum_of_parts([first, second], [2.0, 10.0])
  np.testing.assert_allclose(summed[0], [0.5 + 1.0, 1.0 + 3.0])
  np.testing.assert_allclose(summed[1], [2.0 + 2.0])


def test_summarize_averages_runs_and_counts_wins_lower_eer_being_better():
  results = {
      "run_a": {"ref": {"micro_auc": 0.90, "eer": 0.20}, "x": {"micro_auc": 0.92, "eer": 0.25}},
      "run_b": {"ref": {"micro_auc": 0.80, "eer": 0.30}, "x": {"micro_auc": 0.79, "eer": 0.10}},
  }
  summary = horizon.summarize(results, "ref")
  assert summary["x"]["micro_auc"] == [0.855, 1]
  assert summary["x"]["eer"] == [0.175, 1]
  assert summary["ref"]["micro_auc"] == [0.85, 0]


def test_fit_motion_learns_to_predict_a_static_scene():
  # Every code is the same pattern: a trained model should predict it much better than an
  # untrained one (enough steps for the BatchNorm moving statistics used at inference to settle).
  rng = np.random.default_rng(0)
  pattern = rng.normal(size=(2, 3, 4)).astype(np.float32)
  codes = [np.repeat(pattern[None], 12, axis=0), np.repeat(pattern[None], 10, axis=0)]
  clips = horizon.clips_from(12, time_steps=2, interval=1, delta=1, first_target=0)

  def error(model):
    return horizon.clip_scorer(model)(codes[0], clips)["latent_mean"].mean()

  untrained = horizon.fit_motion(codes, 2, 1, 1, weight_decay=0.0, epochs=0,
                                 learning_rate=1e-2, seed=0, batch_size=4)
  trained = horizon.fit_motion(codes, 2, 1, 1, weight_decay=0.0, epochs=100,
                               learning_rate=1e-2, seed=0, batch_size=4)
  assert tuple(trained(codes[0][None, :2]).shape) == (1, 2, 3, 4)
  assert error(trained) < 0.2 * error(untrained)


def _last_input_model():
  """A motion model that predicts the last input's code (so its error is the code's change)."""
  import keras  # pylint: disable=g-import-not-at-top
  return keras.Sequential([keras.layers.Lambda(lambda past: past[:, -1])])


def test_variant_check_is_the_speedup_auc_on_frozen_codes():
  # Codes that grow by 1 per frame: the last input misses the target by the horizon, h = 2, on
  # normal clips (error 4) and by 2h = 4 on sped-up ones (error 16): every sped-up clip above.
  ramp = [np.arange(30, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 3, 1),
                                                                         np.float32)]
  model = _last_input_model()
  assert horizon.variant_check(model, ramp, steps=2, interval=1, horizon=2) == 1.0
  # A still scene: every error 0, ties count half.
  still = [np.ones((30, 2, 3, 1), np.float32)]
  assert horizon.variant_check(model, still, steps=2, interval=1, horizon=2) == 0.5


def test_variant_check_leaves_out_videos_too_short_at_double_speed():
  # 6 frames: one normal clip (span 3) but none at twice the speed (span 6 needs 7 frames);
  # the check then comes from the 30-frame video alone.
  ramp = np.arange(30, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 3, 1),
                                                                        np.float32)
  short = np.zeros((6, 2, 3, 1), np.float32)
  assert horizon.variant_check(_last_input_model(), [ramp, short], steps=2, interval=1,
                               horizon=2) == 1.0
