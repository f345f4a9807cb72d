"""SavedModel export of the clip scorer."""

from absl import logging
import tensorflow as tf

from daml_tf.models import DAML


class ClipScorer(tf.Module):
  """A clip of k+1 frames in [0, 1] at model resolution -> its anomaly score.

  The background is subtracted inside the graph, so a client sends plain frames.
  """

  def __init__(self, model: DAML):
    super().__init__(name="clip_scorer")
    self.model = model
    clip_shape = (None, model.time_steps + 1) + model.image_size + (model.channels,)
    self.score = tf.function(
        self._score, input_signature=[tf.TensorSpec(clip_shape, tf.float32, name="clip")])

  def _score(self, clip):
    return {"score": self.model(clip - self.model.background, training=False)}


def export_scorer(model: DAML, export_dir: str) -> str:
  """Writes the scorer SavedModel (signature `serving_default`: clip -> score [B])."""
  scorer = ClipScorer(model)
  tf.saved_model.save(scorer, export_dir, signatures={"serving_default": scorer.score})
  logging.info("SavedModel written to %s", export_dir)
  return export_dir
