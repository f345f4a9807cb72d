"""Frame-level evaluation: score every predictable test frame, then AUC/EER on the host."""

import os
from typing import Dict, List, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from daml_tf import config as config_lib
from daml_tf import metrics as metrics_lib
from daml_tf import progress as progress_lib
from daml_tf import report
from daml_tf import run_dir
from daml_tf.data import labels as labels_lib
from daml_tf.data import layout
from daml_tf.data import perturb as perturb_lib
from daml_tf.data import pipeline
from daml_tf.data import registry
from daml_tf.models import DAML
from daml_tf.models.scores import latent_error


class VideoScorer:
  """Scores the frames of a whole video, encoding each frame exactly once.

  The latent codes of all frames are computed in batches and cached; each predictable frame's
  score then needs only a gather of k cached codes and the motion model.
  """

  def __init__(self, model: DAML, data_cfg: config_lib.DataConfig, batch_size: int):
    self._model = model
    self._data_cfg = data_cfg
    self._batch_size = batch_size
    self._encode = tf.function(lambda frames: model.encode(frames, training=False)[-1])
    self._score = tf.function(
        lambda past, target: latent_error(model.motion(past, training=False), target))

  def encode(self, frames: np.ndarray) -> tf.Tensor:
    return tf.concat([
        self._encode(frames[start:start + self._batch_size])
        for start in range(0, len(frames), self._batch_size)
    ], axis=0)

  def score(self, frames: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Raw scores of the predictable frames of one video.

    Args:
      frames: [N, H, W, C] background-subtracted frames.

    Returns:
      (frame_indices, scores): the 0-based indices of the scored (target) frames and their
      scores; the first `clip_span` frames cannot be predicted and are absent.
    """
    cfg = self._data_cfg
    clips = pipeline.clip_indices(len(frames), cfg.time_steps, cfg.interval, cfg.delta)
    if not len(clips):
      return np.zeros([0], np.int64), np.zeros([0], np.float32)
    latents = self.encode(frames)
    scores = []
    for start in range(0, len(clips), self._batch_size):
      rows = clips[start:start + self._batch_size]
      scores.append(self._score(tf.gather(latents, rows[:, :-1]),
                                tf.gather(latents, rows[:, -1])).numpy())
    return clips[:, -1], np.concatenate(scores)


def evaluate(cfg: config_lib.Config, model: DAML = None) -> Dict[str, float]:
  """Scores the test split of `cfg.data`, writes metrics.json, scores.csv and plots.

  Args:
    cfg: the run's config; `cfg.train.model_dir` holds the checkpoint unless `model` is given.
    model: an already restored model (tests, or right after training).

  Returns:
    The metrics dict written to metrics.json (without the config).
  """
  root, videos = layout.find_videos(cfg.data.dataset, cfg.data.data_dir, "testing")
  spec = registry.get_spec(cfg.data.dataset)
  label_path = labels_lib.find_label_file(spec, root, cfg.data.label_file)
  # Labels are checked against the frames found before any frame is scored.
  labels = labels_lib.load_labels(label_path, spec.label_format, videos)
  if model is None:
    model = run_dir.restore_model(cfg)
  background = model.background.numpy()
  output_dir = cfg.eval.output_dir or run_dir.eval_dir(cfg.train.model_dir)
  tf.io.gfile.makedirs(output_dir)

  scorer = VideoScorer(model, cfg.data, cfg.eval.batch_size)
  perturbation = perturb_lib.parse_perturbation(cfg.eval.perturb)
  results: List[report.VideoScores] = []
  progress = progress_lib.Progress(len(videos), unit_name="video")
  for number, (video, video_labels) in enumerate(zip(videos, labels), start=1):
    frames = pipeline.load_video(video, cfg.data.image_size, cfg.data.channels, background,
                                 transform=perturbation)
    frame_indices, scores = scorer.score(frames)
    results.append(report.VideoScores(
        name=video.name, frame_indices=frame_indices, scores=scores,
        normalized=metrics_lib.normalize_scores(scores, cfg.eval.normalize),
        labels=video_labels[frame_indices]))
    progress.update(number, lambda: f"video {video.name} ({number}/{len(videos)}): "
                    f"{len(scores)} of {video.num_frames} frames scored")

  metrics = metrics_lib.evaluate_scores(
      [r.scores for r in results], [r.labels for r in results], cfg.eval.normalize)
  num_frames = int(sum(v.num_frames for v in videos))
  metrics.update(num_frames=num_frames, num_videos=len(videos),
                 num_skipped_frames=num_frames - int(metrics["num_scored_frames"]),
                 normalize=cfg.eval.normalize, perturb=cfg.eval.perturb)
  logging.info("Scored %d of %d test frames in %d videos (the first %d frames of each video "
               "cannot be predicted)", metrics["num_scored_frames"], num_frames, len(videos),
               cfg.data.clip_span)
  report.write_metrics_json(os.path.join(output_dir, "metrics.json"), metrics, cfg.to_dict())
  report.write_scores_csv(os.path.join(output_dir, "scores.csv"), results)
  if cfg.eval.plots:
    for result, video_labels in zip(results, labels):
      report.plot_video_scores(os.path.join(output_dir, f"scores_{result.name}.png"), result,
                               video_labels)
  logging.info("Wrote metrics.json, scores.csv%s to %s",
               " and plots" if cfg.eval.plots else "", output_dir)
  return metrics
