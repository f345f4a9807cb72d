"""TensorBoard summaries and progress lines of a training run."""

from typing import Dict

import tensorflow as tf

from daml_tf import config as config_lib
from daml_tf.models import DAML


class Summaries:
  """TensorBoard scalars and images, written by the chief only."""

  def __init__(self, logdir: str, train_cfg: config_lib.TrainConfig, is_chief: bool = True):
    self._writer = (tf.summary.create_file_writer(logdir) if is_chief else
                    tf.summary.create_noop_writer())
    self._cfg = train_cfg

  def step(self, step: int, values: Dict[str, float]) -> None:
    if step % self._cfg.log_every_steps:
      return
    with self._writer.as_default(step=step):
      for name, value in values.items():
        tf.summary.scalar(f"step/{name}", value)

  def epoch(self, step: int, values: Dict[str, float]) -> None:
    with self._writer.as_default(step=step):
      for name, value in values.items():
        tf.summary.scalar(f"epoch/{name}", value)
    self._writer.flush()

  def images(self, step: int, model: DAML, clip) -> None:
    if not self._cfg.image_summary_steps or step % self._cfg.image_summary_steps:
      return
    rendered = model.render(clip[:1])
    with self._writer.as_default(step=step):
      for name, frames in rendered.items():
        # One row of the clip's frames side by side, clipped to the displayable range.
        frames = tf.clip_by_value(frames, 0.0, 1.0)
        if frames.shape.rank == 5:
          frames = tf.concat(tf.unstack(frames[0], axis=0), axis=1)[tf.newaxis]
        tf.summary.image(name, frames)

  def close(self) -> None:
    self._writer.close()

def progress_values(values: Dict[str, float], clips_per_second: float):
  return [("loss", values["total_loss"]), ("recon", values["recon_loss"]),
          ("latent", values["latent_loss"]), ("clips/s", clips_per_second),
          ("lr", values["learning_rate"])] + [
              (name, values[name]) for name in ("pseudo_loss", "pseudo_latent_sse")
              if name in values]
