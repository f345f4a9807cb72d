"""The joint DAML model: appearance U-Net + motion model, trained with one weighted loss."""

from typing import Dict, Sequence

import keras
import tensorflow as tf

from daml_tf.models.decoder import AppearanceDecoder
from daml_tf.models.encoder import AppearanceEncoder
from daml_tf.models.motion import MotionModel


def latent_error(predicted_latent, observed_latent):
  """The anomaly score: mean over latent elements of (z_hat - z)^2, one value per example."""
  error = tf.square(tf.cast(predicted_latent, tf.float32) - tf.cast(observed_latent, tf.float32))
  return tf.reduce_mean(error, axis=tf.range(1, tf.rank(error)))


@keras.saving.register_keras_serializable(package="daml_tf")
class DAML(keras.Model):
  """Decoupled appearance and motion learning (Li, Leroux, Simoens, CVIU 2021).

  A clip is `[B, k+1, H, W, C]` background-subtracted frames: k inputs and the target frame.
  Every frame is encoded once; frames 2..k are reconstructed from their own latent code with the
  skip features of the frame before; the motion model predicts the target's code from z1..zk.
  The training loss is

      lambda_r * recon + lambda_p * latent + gamma * sum ||W||^2

  with `recon` the pixel SSE of each reconstructed frame (summed over pixels, mean over batch
  and frames), `latent` the squared error of the predicted code (summed over elements, mean
  over batch) and the last term from the L2 kernel regularisers. `lambda_r` and `lambda_p` are
  non-trainable variables so a phase switch (`set_phase_weights`) needs no retracing.

  Calling the model on a clip returns its anomaly score `[B]` (`latent_error`).

  Args:
    image_size: (height, width) of the frames.
    channels: frame channels.
    time_steps: k, the number of input frames.
    levels, feature_root, max_channels: U-Net geometry (see AppearanceEncoder).
    leaky_relu_slope: negative slope of every LeakyReLU.
    weight_decay: gamma.
    latent_loss_trains_encoder: when True (the paper's joint training) the latent loss also
      updates the encoder; when False the codes are constants for the latent loss, so the
      encoder learns appearance only from the reconstruction loss and cannot trade the anomaly
      signal for predictable codes.
    motion_bottleneck: width of the motion model's blocks (0: the code's channels, the paper).
    sync_batchnorm: synchronise BatchNorm statistics across replicas.

  Example:
  >>> model = DAML(image_size=(64, 96), channels=1, time_steps=4, levels=3, feature_root=8)
  >>> clip = np.zeros((2, 5, 64, 96, 1), "float32")
  >>> tuple(model(clip).shape)
  (2,)
  """

  def __init__(self, image_size: Sequence[int], channels: int, time_steps: int,
               levels: int = 4, feature_root: int = 64, max_channels: int = 512,
               leaky_relu_slope: float = 0.2, weight_decay: float = 0.001,
               latent_loss_trains_encoder: bool = True, motion_bottleneck: int = 0,
               sync_batchnorm: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.latent_loss_trains_encoder = latent_loss_trains_encoder
    self.motion_bottleneck = motion_bottleneck
    self.sync_batchnorm = sync_batchnorm
    self.image_size = (int(image_size[0]), int(image_size[1]))
    self.channels = channels
    self.time_steps = time_steps
    self.levels = levels
    self.feature_root = feature_root
    self.max_channels = max_channels
    self.leaky_relu_slope = leaky_relu_slope
    self.weight_decay = weight_decay
    unet_args = dict(
        image_size=self.image_size, channels=channels, levels=levels,
        feature_root=feature_root, max_channels=max_channels,
        leaky_relu_slope=leaky_relu_slope, weight_decay=weight_decay,
        sync_batchnorm=sync_batchnorm)
    self.encoder = AppearanceEncoder(name="encoder", **unet_args)
    self.decoder = AppearanceDecoder(name="decoder", **unet_args)
    self.motion = MotionModel(
        time_steps=time_steps, latent_shape=self.encoder.latent_shape,
        leaky_relu_slope=leaky_relu_slope, weight_decay=weight_decay,
        bottleneck_channels=motion_bottleneck, sync_batchnorm=sync_batchnorm, name="motion")
    # Stored with the weights so a checkpoint or export is self-contained.
    self.background = self.add_weight(
        shape=self.image_size + (channels,), initializer="zeros", trainable=False,
        dtype="float32", name="background")
    self.lambda_r = self.add_weight(
        shape=(), initializer=keras.initializers.Constant(1.0), trainable=False,
        dtype="float32", name="lambda_r")
    self.lambda_p = self.add_weight(
        shape=(), initializer=keras.initializers.Constant(0.001), trainable=False,
        dtype="float32", name="lambda_p")
    self.loss_trackers = {
        name: keras.metrics.Mean(name=name)
        for name in ("recon_loss", "latent_loss", "reg_loss", "total_loss")
    }
    # Every weight exists once the sub-models are built, which their constructors did.
    self.built = True

  @property
  def latent_shape(self):
    return self.encoder.latent_shape

  @property
  def metrics(self):
    return list(self.loss_trackers.values())

  def set_phase_weights(self, lambda_r: float, lambda_p: float) -> None:
    self.lambda_r.assign(lambda_r)
    self.lambda_p.assign(lambda_p)

  def set_background(self, background) -> None:
    self.background.assign(tf.convert_to_tensor(background, tf.float32))

  def encode(self, frames, training=False):
    """Encoder features of `[N, H, W, C]` frames; the last entry is the latent code."""
    return self.encoder(frames, training=training)

  def _encode_clip(self, clip, training):
    """Encodes every frame of the clips once; returns features as [B, k+1, ...] per level."""
    clip_shape = tf.shape(clip)
    batch = clip_shape[0]
    frames = tf.reshape(clip, tf.concat([[-1], clip_shape[2:]], axis=0))
    features = self.encode(frames, training=training)
    return [
        tf.reshape(f, tf.concat([[batch, self.time_steps + 1], tf.shape(f)[1:]], axis=0))
        for f in features
    ]

  def _merge_time(self, x):
    return tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], axis=0))

  def forward(self, clip, training=False) -> Dict[str, tf.Tensor]:
    """Runs both models on a clip.

    Returns:
      reconstructions: [B, k-1, H, W, C] background-subtracted frames 2..k.
      predicted_latent: [B, h, w, c] the motion model's estimate of the target's code.
      target_latent: [B, h, w, c] the target's observed code.
      features: per U-Net level, the encoder features of every frame, [B, k+1, ...].
    """
    k = self.time_steps
    features = self._encode_clip(clip, training)
    latents = features[-1]
    # Frame j (j = 2..k) is decoded from its own code and the skips of frame j-1.
    skips = [self._merge_time(f[:, :k - 1]) for f in features[:-1]]
    current = self._merge_time(latents[:, 1:k])
    reconstructions = self.decoder([current] + skips, training=training)
    reconstructions = tf.reshape(
        reconstructions, tf.concat([[-1, k - 1], tf.shape(reconstructions)[1:]], axis=0))
    if not self.latent_loss_trains_encoder:
      latents = tf.stop_gradient(latents)
    predicted_latent = self.motion(latents[:, :k], training=training)
    return {
        "reconstructions": reconstructions,
        "predicted_latent": predicted_latent,
        "target_latent": tf.cast(latents[:, k], tf.float32),
        "features": features,
    }

  def call(self, clip, training=False):
    outputs = self.forward(clip, training=training)
    return latent_error(outputs["predicted_latent"], outputs["target_latent"])

  def compute_losses(self, clip, outputs) -> Dict[str, tf.Tensor]:
    """The loss terms of one batch (unscaled for distribution)."""
    targets = tf.cast(clip[:, 1:self.time_steps], tf.float32)
    pixel_error = tf.square(tf.cast(outputs["reconstructions"], tf.float32) - targets)
    recon_loss = tf.reduce_mean(tf.reduce_sum(pixel_error, axis=[2, 3, 4]))
    latent_sq = tf.square(outputs["predicted_latent"] - outputs["target_latent"])
    latent_loss = tf.reduce_mean(tf.reduce_sum(latent_sq, axis=[1, 2, 3]))
    reg_loss = tf.add_n([tf.cast(l, tf.float32) for l in self.losses]) if self.losses else 0.0
    reg_loss = tf.convert_to_tensor(reg_loss, tf.float32)
    total_loss = self.lambda_r * recon_loss + self.lambda_p * latent_loss + reg_loss
    return {
        "recon_loss": recon_loss,
        "latent_loss": latent_loss,
        "reg_loss": reg_loss,
        "total_loss": total_loss,
    }

  def _update_trackers(self, losses):
    for name, value in losses.items():
      self.loss_trackers[name].update_state(value)

  def train_step(self, data):
    clip = data[0] if isinstance(data, (tuple, list)) else data
    with tf.GradientTape() as tape:
      outputs = self.forward(clip, training=True)
      losses = self.compute_losses(clip, outputs)
      # Gradients are summed over replicas by the strategy, so each replica's share of the
      # global-batch mean (and of the regularisation term) is 1 / num_replicas.
      replicas = tf.distribute.get_strategy().num_replicas_in_sync
      scaled = self.optimizer.scale_loss(losses["total_loss"] / replicas)
    variables = self.trainable_variables
    gradients = tape.gradient(scaled, variables)
    self.optimizer.apply(gradients, variables)
    self._update_trackers(losses)
    return dict(losses, learning_rate=tf.cast(self.optimizer.learning_rate, tf.float32))

  def test_step(self, data):
    clip = data[0] if isinstance(data, (tuple, list)) else data
    outputs = self.forward(clip, training=False)
    losses = self.compute_losses(clip, outputs)
    self._update_trackers(losses)
    return losses

  def render(self, clip) -> Dict[str, tf.Tensor]:
    """Frames for pictures: inputs, reconstructions and the frame decoded from z_hat.

    The predicted frame is decoded from the predicted code with the skips of the last input
    frame. The background is added back to everything so the images look like the camera's.
    """
    outputs = self.forward(clip, training=False)
    last_skips = [f[:, self.time_steps - 1] for f in outputs["features"][:-1]]
    predicted_frame = self.decoder([outputs["predicted_latent"]] + last_skips, training=False)
    background = self.background
    return {
        "inputs": tf.cast(clip, tf.float32) + background,
        "reconstructions": tf.cast(outputs["reconstructions"], tf.float32) + background,
        "predicted_frame": tf.cast(predicted_frame, tf.float32) + background,
    }

  def get_config(self):
    return {
        "name": self.name,
        "trainable": self.trainable,
        "image_size": self.image_size,
        "channels": self.channels,
        "time_steps": self.time_steps,
        "levels": self.levels,
        "feature_root": self.feature_root,
        "max_channels": self.max_channels,
        "leaky_relu_slope": self.leaky_relu_slope,
        "weight_decay": self.weight_decay,
        "latent_loss_trains_encoder": self.latent_loss_trains_encoder,
        "motion_bottleneck": self.motion_bottleneck,
        "sync_batchnorm": self.sync_batchnorm,
    }

  @classmethod
  def from_config(cls, config):
    return cls(**config)
