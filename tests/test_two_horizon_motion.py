"""TwoHorizonMotion: each head reads only its codes; the latent loss and the scores add both
heads' errors. That every runtime scores it as the evaluation does: tests/test_models.py, for
every registered motion model.
"""

import pathlib

import numpy as np
import pytest
import tensorflow as tf

import testing
from daml_tf.models import build
from daml_tf.models import scores
from daml_tf.models.two_horizon_motion import TwoHorizonMotion

REPO = pathlib.Path(__file__).resolve().parents[1]
LATENT = (2, 3, 4)
TWO_HORIZON = dict(motion="two_horizon")
# k = 4 codes, heads of k - 2 = 2: horizons delta and delta + 2 * interval.
GEOMETRY = dict(time_steps=4)


def test_each_head_reads_only_its_own_codes():
  motion = TwoHorizonMotion(time_steps=5, latent_shape=LATENT, head_steps=3)
  codes = np.random.default_rng(0).normal(size=(2, 5) + LATENT).astype("float32")
  predicted = motion(codes).numpy()
  assert predicted.shape == (2,) + LATENT[:2] + (2 * LATENT[2],)
  channels = LATENT[2]
  oldest_changed, newest_changed = codes.copy(), codes.copy()
  oldest_changed[:, 0] += 1.0
  newest_changed[:, -1] += 1.0
  # The near head (first channels) sees codes 2..4, the far head codes 0..2.
  np.testing.assert_array_equal(motion(oldest_changed).numpy()[..., :channels],
                                predicted[..., :channels])
  assert not np.allclose(motion(oldest_changed).numpy()[..., channels:], predicted[..., channels:])
  np.testing.assert_array_equal(motion(newest_changed).numpy()[..., channels:],
                                predicted[..., channels:])
  assert not np.allclose(motion(newest_changed).numpy()[..., :channels], predicted[..., :channels])


def test_config_round_trip_and_head_steps_checked():
  motion = TwoHorizonMotion(time_steps=6, latent_shape=LATENT, head_steps=4, name="motion")
  again = TwoHorizonMotion.from_config(motion.get_config())
  assert again.get_config() == motion.get_config()
  assert [w.shape for w in again.weights] == [w.shape for w in motion.weights]
  for head_steps in (1, 6):
    with pytest.raises(ValueError, match="head_steps"):
      TwoHorizonMotion(time_steps=6, latent_shape=LATENT, head_steps=head_steps)


def test_the_config_builds_it_with_k_minus_two_codes_per_head():
  cfg = testing.tiny_config(data=GEOMETRY, model=TWO_HORIZON)
  model = build.build_model(cfg)
  assert isinstance(model.motion, TwoHorizonMotion) and model.motion.head_steps == 2


def test_the_ped2_flagfile_predicts_four_and_eight_frames_ahead(monkeypatch):
  # Flagfiles include each other by paths relative to the repository root.
  monkeypatch.chdir(REPO)
  cfg = testing.config_from_args("--flagfile=experiments/ped2_accuracy/configs/ped2_cpu_two_horizon.cfg")
  motion = build.build_model(cfg).motion
  # Heads of k - 2 = 4 codes; the far head's last input is 2 inputs (4 frames) before the
  # near head's, so its target is delta + 4 = 8 frames ahead.
  assert (motion.time_steps, motion.head_steps) == (6, 4)
  assert cfg.data.delta + (motion.time_steps - motion.head_steps) * cfg.data.interval == 8


def test_latent_loss_and_score_add_both_heads_errors():
  cfg = testing.tiny_config(data=GEOMETRY, model=TWO_HORIZON)
  model = build.build_model(cfg)
  clip = tf.constant(testing.tiny_clips(5, seed=1))
  outputs = model.forward(clip)
  predicted, target = outputs["predicted_latent"].numpy(), outputs["target_latent"].numpy()
  channels = target.shape[-1]
  near, far = predicted[..., :channels], predicted[..., channels:]
  per_clip_sse = ((near - target)**2).sum((1, 2, 3)) + ((far - target)**2).sum((1, 2, 3))
  losses = model.compute_losses(clip, outputs)
  np.testing.assert_allclose(losses["latent_loss"].numpy(), per_clip_sse.mean(), rtol=1e-5)
  np.testing.assert_allclose(model(clip).numpy(), per_clip_sse / (2 * target[0].size),
                             rtol=1e-5)


def test_heads_of_repeats_the_observed_code_per_head():
  predicted = np.array([[[[1.0, 3.0]]]], np.float32)  # two heads of a 1-channel code
  observed = np.array([[[[1.0]]]], np.float32)
  # Errors 0 and 4: mean 2, sum 4; cosine of (1, 3) with (1, 1): 4 / sqrt(20).
  np.testing.assert_allclose(scores.latent_error(predicted, observed).numpy(), [2.0])
  np.testing.assert_allclose(scores.latent_sse(predicted, observed).numpy(), [4.0])
  np.testing.assert_allclose(scores.latent_error_map(predicted, observed).numpy(), [[[2.0]]])
  np.testing.assert_allclose(
      scores.cosine_distance(scores.ScoreInputs(predicted, observed)).numpy(),
      [1.0 - 4.0 / np.sqrt(20.0)], rtol=1e-6)
  # One head: the paper's score, unchanged.
  np.testing.assert_allclose(scores.latent_error(predicted[..., :1], observed).numpy(), [0.0])
