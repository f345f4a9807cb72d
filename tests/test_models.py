"""Shapes, wiring, losses and serialisation of the DAML models."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

import testing
from daml_tf import errors
from daml_tf.models import DAML, AppearanceDecoder, AppearanceEncoder, MotionModel
from daml_tf.models import blocks
from daml_tf.models import build
from daml_tf.models import scores


def make_daml(image_size, channels, time_steps, levels, feature_root=2, max_channels=8,
              weight_decay=0.001):
  """A DAML from its parts, as models.build assembles it."""
  unet = dict(image_size=image_size, channels=channels, levels=levels,
              feature_root=feature_root, max_channels=max_channels, weight_decay=weight_decay)
  encoder = AppearanceEncoder(name="encoder", **unet)
  motion = MotionModel(time_steps=time_steps, latent_shape=encoder.latent_shape,
                       weight_decay=weight_decay, name="motion")
  return DAML(encoder, AppearanceDecoder(name="decoder", **unet), motion)


def tiny_model(time_steps=3, levels=2, image_size=(8, 12), channels=1, weight_decay=0.0):
  return make_daml(image_size, channels, time_steps, levels, weight_decay=weight_decay)


def random_clip(model, batch=2, seed=0):
  shape = (batch, model.time_steps + 1) + model.image_size + (model.channels,)
  return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("levels", [3, 4, 5])
@pytest.mark.parametrize("time_steps", [4, 6, 8])
def test_shapes(levels, time_steps):
  model = make_daml((32, 48), 1, time_steps, levels)
  latent = (32 // 2**(levels - 1), 48 // 2**(levels - 1), min(2 * 2**(levels - 1), 8))
  assert model.latent_shape == latent
  clip = random_clip(model)
  outputs = model.forward(clip)
  assert outputs["reconstructions"].shape == (2, time_steps - 1, 32, 48, 1)
  assert outputs["predicted_latent"].shape == (2,) + latent
  assert outputs["target_latent"].shape == (2,) + latent
  assert model(clip).shape == (2,)
  rendered = model.render(clip)
  assert rendered["predicted_frame"].shape == (2, 32, 48, 1)


def test_encoder_channel_cap_and_levels():
  encoder = AppearanceEncoder(image_size=(16, 16), channels=3, levels=4, feature_root=4,
                              max_channels=16)
  features = encoder(np.zeros((1, 16, 16, 3), "float32"))
  assert [tuple(f.shape[1:]) for f in features] == [
      (16, 16, 4), (8, 8, 8), (4, 4, 16), (2, 2, 16)]


def test_encoder_rejects_indivisible_size():
  with pytest.raises(ValueError, match="divisible"):
    AppearanceEncoder(image_size=(20, 16), channels=1, levels=4)


def test_previous_frame_shortcut_wiring():
  model = tiny_model(time_steps=3)
  clip = random_clip(model, batch=1)
  k = model.time_steps
  changed = clip.copy()
  # Alter frame T(k-1) (index k-2) only.
  changed[:, k - 2] += 1.0
  base = model.forward(clip)
  after = model.forward(changed)
  # Frame T(k) (index k-1) is reconstruction number k-2 (reconstructions start at frame 2).
  recon_k_before = base["reconstructions"][:, k - 2].numpy()
  recon_k_after = after["reconstructions"][:, k - 2].numpy()
  assert np.abs(recon_k_before - recon_k_after).max() > 1e-6
  # T(k)'s own code is unaffected: the encoder sees one frame at a time.
  latents_before = model.encode(clip[:, k - 1])[-1].numpy()
  latents_after = model.encode(changed[:, k - 1])[-1].numpy()
  np.testing.assert_array_equal(latents_before, latents_after)
  # And T(k)'s reconstruction depends on T(k-1) only through the skips: feeding the decoder the
  # skips of the unchanged previous frame reproduces the original reconstruction.
  skips = model.encode(clip[:, k - 2])[:-1]
  redecoded = model.decoder([model.encode(changed[:, k - 1])[-1]] + skips).numpy()
  np.testing.assert_allclose(redecoded, recon_k_before, rtol=1e-5, atol=1e-6)


def test_decoder_uses_own_code():
  model = tiny_model(time_steps=3)
  clip = random_clip(model, batch=1)
  changed = clip.copy()
  changed[:, 2] += 1.0  # Frame 3 = T(k): its reconstruction must change through its own code.
  before = model.forward(clip)["reconstructions"][:, 1].numpy()
  after = model.forward(changed)["reconstructions"][:, 1].numpy()
  assert np.abs(before - after).max() > 1e-6


def _hand_outputs(batch, k, height, width, latent_value):
  return {
      "reconstructions": tf.ones((batch, k - 1, height, width, 1)),
      "predicted_latent": tf.fill((batch, 1, 1, 2), latent_value),
      "target_latent": tf.zeros((batch, 1, 1, 2)),
  }


@pytest.mark.parametrize("phase,lambda_r,lambda_p", [
    ("train", 1.0, 0.001), ("finetune", 0.001, 1.0)])
def test_loss_matches_hand_computation(phase, lambda_r, lambda_p):
  del phase
  model = tiny_model(time_steps=3, image_size=(8, 12), weight_decay=0.0)
  model.set_phase_weights(lambda_r, lambda_p)
  clip = np.zeros((2, 4, 8, 12, 1), "float32")
  # Frames 2..k of the first example are 0.5, of the second 0: with reconstructions of 1,
  # the SSE per frame is 96 * 0.25 = 24 and 96 * 1 = 96, mean over batch and frames = 60.
  clip[0, 1:3] = 0.5
  losses = model.compute_losses(clip, _hand_outputs(2, 3, 8, 12, 3.0))
  # Latent: 2 elements of (3 - 0)^2 summed = 18 per example, mean over batch = 18.
  assert losses["recon_loss"].numpy() == pytest.approx(60.0)
  assert losses["latent_loss"].numpy() == pytest.approx(18.0)
  assert losses["reg_loss"].numpy() == pytest.approx(0.0)
  assert losses["total_loss"].numpy() == pytest.approx(lambda_r * 60.0 + lambda_p * 18.0)


def test_regularisation_is_gamma_sum_squared_kernels():
  gamma = 0.001
  model = tiny_model(weight_decay=gamma)
  model(random_clip(model))
  kernels = [w.numpy() for w in model.trainable_weights if w.path.endswith("kernel")]
  assert len(kernels) == len(model.losses) > 0
  expected = gamma * sum(float(np.sum(k.astype(np.float64)**2)) for k in kernels)
  clip = random_clip(model)
  losses = model.compute_losses(clip, model.forward(clip))
  assert losses["reg_loss"].numpy() == pytest.approx(expected, rel=1e-5)
  # Biases and BatchNorm parameters are not regularised.
  assert any(w.path.endswith("bias") for w in model.trainable_weights)


def test_score_is_mean_latent_error():
  model = tiny_model()
  clip = random_clip(model)
  outputs = model.forward(clip)
  expected = np.mean((outputs["predicted_latent"].numpy() - outputs["target_latent"].numpy())**2,
                     axis=(1, 2, 3))
  np.testing.assert_allclose(model(clip).numpy(), expected, rtol=1e-5)


def test_train_step_reduces_loss_and_reports_terms():
  keras.utils.set_random_seed(1)
  model = tiny_model(weight_decay=0.001)
  model.compile(optimizer=keras.optimizers.Adam(1e-2))
  clip = random_clip(model, batch=4)
  step = tf.function(model.train_step)
  first = step(clip)
  assert set(first) == {"recon_loss", "latent_loss", "reg_loss", "total_loss", "learning_rate"}
  for _ in range(30):
    last = step(clip)
  assert float(last["total_loss"]) < float(first["total_loss"])
  assert float(last["learning_rate"]) == pytest.approx(1e-2)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_train_step(policy):
  keras.mixed_precision.set_global_policy(policy)
  try:
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    if policy == "mixed_float16":
      assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    before = [w.numpy().copy() for w in model.trainable_weights]
    results = tf.function(model.train_step)(random_clip(model))
    assert all(np.isfinite(float(v)) for v in results.values())
    assert model.encoder.outputs[-1].dtype != "float32"
    assert all(w.dtype == "float32" for w in model.trainable_weights)
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    # A loss-scaled first step may be skipped if it overflows; bfloat16 has no such skip.
    if policy == "mixed_bfloat16":
      assert any(changed)
  finally:
    keras.mixed_precision.set_global_policy("float32")


def test_keras_save_load_round_trip(tmp_path):
  model = tiny_model(time_steps=4, levels=3, image_size=(16, 16))
  model.set_background(np.full((16, 16, 1), 0.25, "float32"))
  clip = random_clip(model)
  path = str(tmp_path / "model.keras")
  model.save(path)
  restored = keras.models.load_model(path)
  assert restored.get_config() == model.get_config()
  np.testing.assert_array_equal(restored(clip).numpy(), model(clip).numpy())
  np.testing.assert_array_equal(restored.background.numpy(), model.background.numpy())


@pytest.mark.parametrize("cls,kwargs", [
    (AppearanceEncoder, dict(image_size=(16, 16), channels=1, levels=3, feature_root=2)),
    (AppearanceDecoder, dict(image_size=(16, 16), channels=1, levels=3, feature_root=2)),
    (MotionModel, dict(time_steps=6, latent_shape=(4, 4, 8))),
])
def test_submodel_config_round_trip(cls, kwargs):
  model = cls(**kwargs)
  clone = cls.from_config(model.get_config())
  assert clone.get_config() == model.get_config()
  assert clone.count_params() == model.count_params()


@keras.saving.register_keras_serializable(package="daml_tf_tests")
class MeanMotion(blocks.LatentCodeInputs, blocks.ArgsConfig, keras.Model):
  """A stand-in motion model: a 1x1 convolution of the mean of the k codes."""

  CONFIG_ARGS = ("time_steps", "latent_shape")

  def __init__(self, time_steps, latent_shape, **kwargs):
    latent_shape = tuple(int(d) for d in latent_shape)
    codes = keras.Input((time_steps,) + latent_shape)
    predicted = keras.layers.Conv2D(latent_shape[-1], 1, dtype="float32", name="mean_conv")(
        keras.ops.mean(codes, axis=1))
    super().__init__(inputs=codes, outputs=predicted, **kwargs)
    self._remember(time_steps=time_steps, latent_shape=latent_shape)

  @classmethod
  def from_model_config(cls, model_cfg, time_steps, feature_shapes, sync_batchnorm=False,
                        name="motion"):
    return cls(time_steps, feature_shapes[-1], name=name)


def test_a_new_motion_model_is_one_class_and_one_registry_line(monkeypatch):
  monkeypatch.setitem(build.MOTION_MODELS, "mean", MeanMotion)  # The one registry line.
  cfg = testing.tiny_config()
  cfg = cfg.replace(model=dataclasses.replace(cfg.model, motion="mean"))
  model = build.build_model(cfg)
  assert isinstance(model.motion, MeanMotion)
  clip = random_clip(model)
  assert model(clip).shape == (2,)
  model.compile(optimizer=keras.optimizers.Adam(1e-3))
  results = tf.function(model.train_step)(clip)
  assert all(np.isfinite(float(v)) for v in results.values())
  # The serving export's float32 rebuild goes through get_config/from_config.
  copy = build.float32_copy(model)
  assert isinstance(copy.motion, MeanMotion)
  np.testing.assert_allclose(copy(clip).numpy(), model(clip).numpy(), rtol=1e-6)


def test_unknown_motion_model_names_the_known_ones():
  cfg = testing.tiny_config()
  cfg = cfg.replace(model=dataclasses.replace(cfg.model, motion="lstm"))
  with pytest.raises(errors.ConfigError, match="--motion must be one of.*conv3d"):
    build.build_model(cfg)


def test_build_model_restores_the_global_dtype_policy():
  cfg = testing.tiny_config()
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    model = build.float32_model(cfg)
    assert keras.mixed_precision.global_policy().name == "mixed_float16"
    assert model.encoder.outputs[-1].dtype == "float32"
  finally:
    keras.mixed_precision.set_global_policy("float32")


def _weights(layer_owner):
  return [w.numpy().copy() for w in layer_owner.weights]


def test_motion_only_step_leaves_the_unet_bit_identical():
  keras.utils.set_random_seed(2)
  model = tiny_model(weight_decay=0.001)
  model.compile(optimizer=keras.optimizers.Adam(1e-2))
  model.optimizer.build(model.trainable_variables)
  clip = random_clip(model, batch=4)
  # Every weight of the U-Net, BatchNorm moving statistics included.
  unet_before = _weights(model.encoder) + _weights(model.decoder)
  motion_before = _weights(model.motion)
  step = tf.function(lambda c: model.train_step(c, trains="motion"))
  for _ in range(3):
    losses = step(clip)
  for before, after in zip(unet_before, _weights(model.encoder) + _weights(model.decoder)):
    np.testing.assert_array_equal(before, after)
  assert any(not np.array_equal(b, a) for b, a in zip(motion_before, _weights(model.motion)))
  assert float(losses["recon_loss"]) == 0.0 and float(losses["latent_loss"]) > 0
  # The default step trains the U-Net too.
  tf.function(model.train_step)(clip)
  assert any(not np.array_equal(b, a) for b, a in zip(unet_before, _weights(model.encoder)))


def test_pseudo_anomaly_hinge_matches_hand_computation():
  model = tiny_model()
  pseudo = random_clip(model, batch=3, seed=5)
  latents = model.encode(pseudo.reshape((-1,) + pseudo.shape[2:]))[-1].numpy()
  latents = latents.reshape(pseudo.shape[:2] + latents.shape[1:])
  predicted = model.motion(latents[:, :model.time_steps], training=True).numpy()
  sse = ((predicted - latents[:, model.time_steps])**2).sum(axis=(1, 2, 3))
  normal_sse = tf.constant([sse.mean(), sse.mean() * 3])  # mean 2 x the pseudo clips' mean
  hinge, pseudo_sse = model.pseudo_anomaly_loss(pseudo, normal_sse, margin=1.5, training=False)
  floor = 1.5 * 2 * sse.mean()
  assert float(hinge) == pytest.approx(np.maximum(floor - sse, 0).mean(), rel=1e-4)
  assert float(pseudo_sse) == pytest.approx(sse.mean(), rel=1e-4)


def test_train_step_with_pseudo_anomalies_reports_the_hinge():
  model = tiny_model()
  model.compile(optimizer=keras.optimizers.Adam(1e-3))
  model.optimizer.build(model.trainable_variables)  # As training.compile_model does.
  batch = (random_clip(model, batch=2), random_clip(model, batch=2, seed=3))
  losses = tf.function(lambda b: model.train_step(
      b, trains="motion", pseudo_anomaly_weight=1.0, pseudo_anomaly_margin=2.0))(batch)
  assert {"pseudo_loss", "pseudo_latent_sse"} <= set(losses)
  # Without a weight the pseudo-anomalous clips are ignored.
  assert "pseudo_loss" not in tf.function(model.train_step)(batch)


@pytest.fixture(scope="module", params=sorted(build.MOTION_MODELS))
def exported_run(request, tmp_path_factory):
  """A run directory of each registered motion model, with its serving and LiteRT exports."""
  model_dir = tmp_path_factory.mktemp(request.param)
  cfg, model = testing.make_exported_run(model_dir, seed=2, data=dict(time_steps=4),
                                         model=dict(motion=request.param))
  return cfg, model, model_dir


# The Keras runtime and the SavedModel run the same float32 ops as the evaluation (1e-5
# relative); the float32 LiteRT flatbuffers 1e-4 relative on scores (their codes agree to
# ~1e-7 absolute, tests/test_litert.py).
@pytest.mark.parametrize("where,rtol", [("", 1e-5), ("export", 1e-5), ("export/litert", 1e-4)])
def test_every_motion_model_streams_in_every_runtime_as_evaluated(exported_run, tmp_path, where,
                                                                 rtol):
  cfg, model, model_dir = exported_run
  folder = testing.write_pngs(tmp_path / "video", testing.moving_frames(24))
  results = testing.assert_streams_as_evaluated(cfg, model, model_dir / where, folder, rtol)
  # Heatmaps are drawn on the latent grid whatever the motion model reads.
  assert results[-1].error_map.shape == testing.LATENT[:2]


def _streamable_scores():
  """Every registered score a streaming runtime can compute (those that need no decoder)."""
  return sorted(name for name, score in scores.SCORES.items() if not score.needs_frames)


@pytest.fixture(scope="module")
def exported_conv3d_run(tmp_path_factory):
  """A run of the paper's motion model with its serving and LiteRT exports."""
  model_dir = tmp_path_factory.mktemp("scores")
  cfg, model = testing.make_exported_run(model_dir, seed=4, data=dict(time_steps=4))
  return cfg, model, model_dir


@pytest.mark.parametrize("score", _streamable_scores())
@pytest.mark.parametrize("where,rtol", [("", 1e-5), ("export", 1e-5), ("export/litert", 1e-4)])
def test_every_streamable_score_streams_in_every_runtime_as_evaluated(exported_conv3d_run,
                                                                     tmp_path, where, rtol,
                                                                     score):
  cfg, model, model_dir = exported_conv3d_run
  folder = testing.write_pngs(tmp_path / "video", testing.moving_frames(24))
  testing.assert_streams_as_evaluated(cfg, model, model_dir / where, folder, rtol, score=score)
