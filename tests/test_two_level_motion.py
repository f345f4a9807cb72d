"""TwoLevelMotion: the code's layout and scales; each head reads only its level of its codes; the
latent loss and the scores weigh both parts' errors equally. That every runtime scores it as the
evaluation does: tests/test_models.py, for every registered motion model.
"""

import pathlib

import numpy as np
import pytest
import tensorflow as tf

import testing
from daml_tf.models import build
from daml_tf.models.two_level_motion import TwoLevelMotion

REPO = pathlib.Path(__file__).resolve().parents[1]
FINE, LATENT = (4, 6, 2), (2, 3, 3)  # 2x2 fine cells per latent cell: 8 + 3 code channels.
TWO_LEVEL = dict(motion="two_level")
GEOMETRY = dict(time_steps=4)


def small_motion(**kwargs):
  return TwoLevelMotion(time_steps=5, fine_shape=FINE, latent_shape=LATENT, head_steps=3,
                        **kwargs)


def test_the_code_is_the_fine_level_on_the_latent_grid_then_the_latent_code():
  motion = small_motion()
  rng = np.random.default_rng(0)
  fine = rng.normal(size=(2,) + FINE).astype("float32")
  latent = rng.normal(size=(2,) + LATENT).astype("float32")
  code = motion.code_of([fine, latent]).numpy()
  assert code.shape == (2, 2, 3, 11) and motion.code_shape == (2, 3, 11)
  # 11 elements per cell, 8 fine and 3 latent: squared scales 11 / 16 and 11 / 6.
  fine_scale, latent_scale = np.sqrt(11 / 16), np.sqrt(11 / 6)
  # Cell (i, j) holds the fine pixels (2i + a, 2j + b), a and b major, then their channels.
  for i, j, a, b, channel in [(0, 0, 0, 0, 0), (1, 2, 1, 0, 1), (0, 1, 1, 1, 0)]:
    np.testing.assert_allclose(code[:, i, j, (2 * a + b) * 2 + channel] / fine_scale,
                               fine[:, 2 * i + a, 2 * j + b, channel], rtol=1e-6)
  np.testing.assert_allclose(code[..., 8:] / latent_scale, latent, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(motion.predicted_latent_of(code)), latent, rtol=1e-6)


def test_each_part_counts_equally_in_the_mean_squared_error():
  motion = small_motion()
  zeros = [np.zeros((1,) + FINE, "float32"), np.zeros((1,) + LATENT, "float32")]
  fine_off = motion.code_of([np.ones((1,) + FINE, "float32"), zeros[1]]).numpy()
  latent_off = motion.code_of([zeros[0], np.ones((1,) + LATENT, "float32")]).numpy()
  # An error of 1 in every element of one part: that part's mean error 1, the other's 0, so
  # the mean over the code's elements is (1 + 0) / 2 whichever part it is.
  assert np.mean(fine_off**2) == pytest.approx(0.5)
  assert np.mean(latent_off**2) == pytest.approx(0.5)


def test_each_head_reads_only_its_level_of_its_codes():
  motion = small_motion()
  codes = np.random.default_rng(1).normal(size=(2, 5, 2, 3, 11)).astype("float32")
  predicted = motion(codes).numpy()
  assert predicted.shape == (2, 2, 3, 11)

  def changed(step, channels):
    other = codes.copy()
    other[:, step, ..., channels] += 1.0
    return motion(other).numpy()

  fine, latent = slice(0, 8), slice(8, 11)
  # The fine head reads the fine channels of codes 2..4; the latent head the latent channels
  # of codes 0..2.
  np.testing.assert_array_equal(changed(0, fine), predicted)
  np.testing.assert_array_equal(changed(4, latent), predicted)
  newest_fine, oldest_latent = changed(4, fine), changed(0, latent)
  np.testing.assert_array_equal(newest_fine[..., latent], predicted[..., latent])
  assert not np.allclose(newest_fine[..., fine], predicted[..., fine])
  np.testing.assert_array_equal(oldest_latent[..., fine], predicted[..., fine])
  assert not np.allclose(oldest_latent[..., latent], predicted[..., latent])


def test_config_round_trip_and_arguments_checked():
  motion = small_motion(name="motion")
  again = TwoLevelMotion.from_config(motion.get_config())
  assert again.get_config() == motion.get_config()
  assert [w.shape for w in again.weights] == [w.shape for w in motion.weights]
  for head_steps in (1, 5):
    with pytest.raises(ValueError, match="head_steps"):
      TwoLevelMotion(time_steps=5, fine_shape=FINE, latent_shape=LATENT, head_steps=head_steps)
  with pytest.raises(ValueError, match="integer factor"):
    TwoLevelMotion(time_steps=5, fine_shape=(4, 5, 2), latent_shape=LATENT, head_steps=3)
  with pytest.raises(ValueError, match="integer factor"):  # The latent code itself.
    TwoLevelMotion(time_steps=5, fine_shape=LATENT, latent_shape=LATENT, head_steps=3)


def test_the_ped2_flagfile_predicts_the_fine_level_four_and_the_latent_eight_frames_ahead(
    monkeypatch):
  monkeypatch.chdir(REPO)  # Flagfiles include each other by paths relative to the root.
  cfg = testing.config_from_args("--flagfile=experiments/ped2_accuracy/configs/ped2_cpu_two_level.cfg")
  motion = build.build_model(cfg).motion
  assert isinstance(motion, TwoLevelMotion)
  assert motion.fine_shape == (64, 96, 8) and motion.latent_shape == (32, 48, 16)
  assert (motion.time_steps, motion.head_steps) == (6, 4)
  assert cfg.data.delta == 4
  assert cfg.data.delta + (motion.time_steps - motion.head_steps) * cfg.data.interval == 8


def test_latent_loss_and_score_weigh_both_parts_by_their_mean():
  cfg = testing.tiny_config(data=GEOMETRY, model=TWO_LEVEL)
  model = build.build_model(cfg)
  clip = tf.constant(testing.tiny_clips(5, seed=2))
  outputs = model.forward(clip)
  # By hand: the fine part's prediction back at the fine level, against the target's features.
  motion = model.motion
  features = [f.numpy() for f in model.encode(clip[:, 4])]
  fine_channels = motion.code_shape[-1] - testing.LATENT[-1]
  predicted = outputs["predicted_latent"].numpy()
  fine_predicted = tf.nn.depth_to_space(predicted[..., :fine_channels], 2).numpy()
  fine_error = ((fine_predicted / motion._fine_scale - features[0])**2).mean((1, 2, 3))
  latent_error = ((np.asarray(motion.predicted_latent_of(predicted)) - features[-1])**2).mean(
      (1, 2, 3))
  np.testing.assert_allclose(model(clip).numpy(), (fine_error + latent_error) / 2, rtol=1e-4)
  code_elements = np.prod(motion.code_shape)
  losses = model.compute_losses(clip, outputs)
  np.testing.assert_allclose(losses["latent_loss"].numpy(),
                             (code_elements * (fine_error + latent_error) / 2).mean(), rtol=1e-4)
  # The predicted frame decodes the latent head's prediction.
  assert model.render(clip)["predicted_frame"].shape == (2, testing.HEIGHT, testing.WIDTH, 1)
