"""The joint DAML model: appearance U-Net + motion model, trained with one weighted loss."""

from typing import Dict

import keras
import tensorflow as tf

from daml_tf.models.scores import latent_error
from daml_tf.models.scores import latent_sse


def map_frames(function, clip):
  """Applies `function` to every frame of clips in one batch, keeping the clip axes.

  Args:
    function: frames [N, H, W, C] -> a tensor [N, ...] or a list of them (encoder features).
    clip: [B, T, H, W, C].

  Returns:
    function's output(s), each reshaped to [B, T, ...].
  """
  shape = tf.shape(clip)
  # A static T stays static, so the motion model sees its input's known time axis.
  leading = [shape[0], clip.shape[1] if clip.shape[1] is not None else shape[1]]
  outputs = function(tf.reshape(clip, tf.concat([[-1], shape[2:]], axis=0)))
  return tf.nest.map_structure(
      lambda output: tf.reshape(output, tf.concat([leading, tf.shape(output)[1:]], axis=0)),
      outputs)


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

  The model receives its parts; `daml_tf.models.build.build_model` builds them from a config
  (the motion model by its registered name). The parts keep the attribute names `encoder`,
  `decoder` and `motion`: checkpoints store the weights under them.

  Args:
    encoder: an AppearanceEncoder (frames [N, H, W, C] -> features of every level, the last
      being the latent code).
    decoder: an AppearanceDecoder of the same geometry.
    motion: a motion model: k codes [B, k, h, w, c] -> the predicted code [B, h, w, c] in
      float32 (or H predictions of it stacked on channels, [B, h, w, H*c]: the latent loss and
      the scores then compare each with the target, see scores.heads_of); it has a
      `time_steps` attribute (k) and says what a frame's code is (`code_of`: the latent code
      unless it reads other encoder levels too, see blocks.LatentCodeInputs).
    latent_loss_trains_encoder: when True (the paper's joint training) the latent loss also
      updates the encoder; when False the codes are constants for the latent loss, so the
      encoder learns appearance only from the reconstruction loss and cannot trade the anomaly
      signal for predictable codes.

  Example:
  >>> encoder = AppearanceEncoder(image_size=(64, 96), channels=1, levels=3, feature_root=8,
  ...                             name="encoder")
  >>> decoder = AppearanceDecoder(image_size=(64, 96), channels=1, levels=3, feature_root=8,
  ...                             name="decoder")
  >>> motion = MotionModel(time_steps=4, latent_shape=encoder.latent_shape, name="motion")
  >>> model = DAML(encoder, decoder, motion)
  >>> tuple(model(np.zeros((2, 5, 64, 96, 1), "float32")).shape)
  (2,)
  """

  def __init__(self, encoder: keras.Model, decoder: keras.Model, motion: keras.Model,
               latent_loss_trains_encoder: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.latent_loss_trains_encoder = latent_loss_trains_encoder
    self.encoder = encoder
    self.decoder = decoder
    self.motion = motion
    self.image_size = tuple(int(d) for d in encoder.image_size)
    self.channels = int(encoder.channels)
    self.time_steps = int(motion.time_steps)
    # Stored with the weights so a checkpoint or export is self-contained.
    self.background = self.add_weight(
        shape=self.image_size + (self.channels,), initializer="zeros", trainable=False,
        dtype="float32", name="background")
    self.lambda_r = self.add_weight(
        shape=(), initializer=keras.initializers.Constant(1.0), trainable=False,
        dtype="float32", name="lambda_r")
    self.lambda_p = self.add_weight(
        shape=(), initializer=keras.initializers.Constant(0.001), trainable=False,
        dtype="float32", name="lambda_p")
    self.loss_trackers = {
        name: keras.metrics.Mean(name=name)
        for name in ("recon_loss", "latent_loss", "reg_loss", "total_loss", "pseudo_loss",
                     "pseudo_latent_sse")
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

  @property
  def code_shape(self):
    """(h, w, c) of the code the motion model reads per frame (the latent code's, unless the
    motion model reads other levels too)."""
    return tuple(self.motion.code_shape)

  def code_of(self, features):
    """The code of frames, from their encoder features (`encode`): what the motion model reads,
    the runtimes cache and the scores compare."""
    return self.motion.code_of(features)

  def predicted_latent_of(self, predicted_code):
    """The latent code the decoder can turn into a frame, of the motion model's prediction."""
    return self.motion.predicted_latent_of(predicted_code)

  def set_background(self, background) -> None:
    self.background.assign(tf.convert_to_tensor(background, tf.float32))

  def encode(self, frames, training=False):
    """Encoder features of `[N, H, W, C]` frames; the last entry is the latent code."""
    return self.encoder(frames, training=training)

  def _encode_clip(self, clip, training):
    """Encodes every frame of the clips once: (features per level, codes), each [B, k+1, ...]."""

    def features_and_code(frames):
      features = self.encode(frames, training=training)
      return list(features) + [self.code_of(features)]

    outputs = map_frames(features_and_code, clip)
    return outputs[:-1], outputs[-1]

  def _merge_time(self, x):
    return tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], axis=0))

  def forward(self, clip, training=False) -> Dict[str, tf.Tensor]:
    """Runs both models on a clip.

    Returns:
      reconstructions: [B, k-1, H, W, C] background-subtracted frames 2..k.
      predicted_latent: [B, *code_shape] the motion model's estimate of the target's code
        (the latent code, unless the motion model reads other levels too: `code_of`).
      target_latent: [B, *code_shape] the target's observed code.
      features: per U-Net level, the encoder features of every frame, [B, k+1, ...].
    """
    k = self.time_steps
    features, codes = self._encode_clip(clip, training)
    latents = features[-1]
    # Frame j (j = 2..k) is decoded from its own code and the skips of frame j-1.
    skips = [self._merge_time(f[:, :k - 1]) for f in features[:-1]]
    current = self._merge_time(latents[:, 1:k])
    reconstructions = self.decoder([current] + skips, training=training)
    reconstructions = tf.reshape(
        reconstructions, tf.concat([[-1, k - 1], tf.shape(reconstructions)[1:]], axis=0))
    if not self.latent_loss_trains_encoder:
      codes = tf.stop_gradient(codes)
    predicted_latent = self.motion(codes[:, :k], training=training)
    return {
        "reconstructions": reconstructions,
        "predicted_latent": predicted_latent,
        "target_latent": tf.cast(codes[:, k], tf.float32),
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
    latent_loss = tf.reduce_mean(latent_sse(outputs["predicted_latent"],
                                            outputs["target_latent"]))
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

  def _motion_losses(self, clip) -> Dict[str, tf.Tensor]:
    """Losses of a motion-only step: the U-Net runs frozen, in inference mode.

    Its BatchNorm statistics therefore stay as they are, and the motion model learns to
    predict the codes it will be given at test time.
    """
    codes = tf.stop_gradient(self._encode_clip(clip, training=False)[1])
    predicted = self.motion(codes[:, :self.time_steps], training=True)
    target = tf.cast(codes[:, self.time_steps], tf.float32)
    per_clip_sse = latent_sse(predicted, target)
    motion_reg = [tf.cast(l, tf.float32) for l in self.motion.losses]
    return {
        "recon_loss": tf.constant(0.0),
        "latent_loss": tf.reduce_mean(per_clip_sse),
        "reg_loss": tf.add_n(motion_reg) if motion_reg else tf.constant(0.0),
        "per_clip_latent_sse": per_clip_sse,
    }

  def _all_losses(self, clip) -> Dict[str, tf.Tensor]:
    outputs = self.forward(clip, training=True)
    losses = self.compute_losses(clip, outputs)
    losses["per_clip_latent_sse"] = latent_sse(outputs["predicted_latent"],
                                               outputs["target_latent"])
    return losses

  def pseudo_anomaly_loss(self, pseudo_clip, normal_sse, margin: float, training: bool):
    """Hinge pushing each pseudo-anomalous clip's latent SSE above margin x the normal mean.

    The codes are constants here: the hinge teaches the motion model that motion this fast
    is not predictable, it does not reshape the appearance codes.

    Returns:
      (the hinge loss, the mean latent SSE of the pseudo-anomalous clips).
    """
    codes = tf.stop_gradient(self._encode_clip(pseudo_clip, training=training)[1])
    predicted = self.motion(codes[:, :self.time_steps], training=True)
    sse = latent_sse(predicted, codes[:, self.time_steps])
    floor = margin * tf.stop_gradient(tf.reduce_mean(normal_sse))
    return tf.reduce_mean(tf.nn.relu(floor - sse)), tf.reduce_mean(sse)

  def train_step(self, data, trains: str = "all", pseudo_anomaly_weight: float = 0.0,
                 pseudo_anomaly_margin: float = 2.0):
    """One optimisation step.

    Args:
      data: a clip batch [B, k+1, H, W, C], or (clips, pseudo-anomalous clips).
      trains: "all" (every weight, the loss of the class doc) or "motion" (the motion model
        alone on the latent loss, the U-Net frozen).
      pseudo_anomaly_weight: weight of the pseudo-anomaly hinge (scaled by lambda_p); used
        when `data` carries pseudo-anomalous clips.
      pseudo_anomaly_margin: see `pseudo_anomaly_loss`.
    """
    clips = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    with tf.GradientTape() as tape:
      losses = self._motion_losses(clips[0]) if trains == "motion" else self._all_losses(
          clips[0])
      total = (self.lambda_r * losses["recon_loss"] + self.lambda_p * losses["latent_loss"] +
               losses["reg_loss"])
      normal_sse = losses.pop("per_clip_latent_sse")
      if len(clips) > 1 and pseudo_anomaly_weight:
        hinge, pseudo_sse = self.pseudo_anomaly_loss(
            clips[1], normal_sse, pseudo_anomaly_margin, training=trains != "motion")
        losses.update(pseudo_loss=hinge, pseudo_latent_sse=pseudo_sse)
        total += self.lambda_p * pseudo_anomaly_weight * hinge
      losses["total_loss"] = total
      # Gradients are summed over replicas by the strategy, so each replica's share of the
      # global-batch mean (and of the regularisation term) is 1 / num_replicas.
      replicas = tf.distribute.get_strategy().num_replicas_in_sync
      scaled = self.optimizer.scale_loss(total / replicas)
    variables = (self.motion.trainable_variables if trains == "motion" else
                 self.trainable_variables)
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
    predicted_frame = self.decoder(
        [self.predicted_latent_of(outputs["predicted_latent"])] + last_skips, training=False)
    background = self.background
    return {
        "inputs": tf.cast(clip, tf.float32) + background,
        "reconstructions": tf.cast(outputs["reconstructions"], tf.float32) + background,
        "predicted_frame": tf.cast(predicted_frame, tf.float32) + background,
    }

  def get_config(self):
    # The parts' own configs, so from_config rebuilds the same classes (any registered motion
    # model) under the current dtype policy.
    return {
        "name": self.name,
        "trainable": self.trainable,
        "encoder": keras.saving.serialize_keras_object(self.encoder),
        "decoder": keras.saving.serialize_keras_object(self.decoder),
        "motion": keras.saving.serialize_keras_object(self.motion),
        "latent_loss_trains_encoder": self.latent_loss_trains_encoder,
    }

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    parts = {part: keras.saving.deserialize_keras_object(config.pop(part))
             for part in ("encoder", "decoder", "motion")}
    return cls(**parts, **config)
