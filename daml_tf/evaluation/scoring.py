"""Frame-level evaluation: score every predictable test frame, then AUC/EER on the host."""

import os
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from daml_tf import fileio
from daml_tf import config as config_lib
from daml_tf import errors
from daml_tf import metrics as metrics_lib
from daml_tf import progress as progress_lib
from daml_tf.evaluation import report
from daml_tf import smoothing as smoothing_lib
from daml_tf import run_dir
from daml_tf.data import video_io
from daml_tf.data import labels as labels_lib
from daml_tf.data import layout
from daml_tf.data import motion_maps
from daml_tf.data import perturb as perturb_lib
from daml_tf.data import pipeline
from daml_tf.data import registry
from daml_tf.models import DAML
from daml_tf.models import scores


class VideoScorer:
  """Scores the frames of a whole video, encoding each frame exactly once.

  The encoder features of all frames are computed in batches and cached; each predictable
  frame's score then needs only a gather of k cached codes and the motion model (and, for the
  scores that look at the predicted frame, the decoder with the last input's skips).

  Args:
    model: the restored DAML model.
    data_cfg: its DataConfig.
    batch_size: frames encoded (and clips scored) at once.
    score: a daml_tf.models.scores.SCORES name.
    score_stats: {part: (mean, std)} of a fusion score's parts on normal frames.
    motion_norm: the flow normalisation a score of motion evidence needs (`motion_of` makes a
      video's motion maps with it).
  """

  def __init__(self, model: DAML, data_cfg: config_lib.DataConfig, batch_size: int,
               score: str = scores.DEFAULT_SCORE,
               score_stats: Optional[Mapping[str, Tuple[float, float]]] = None,
               motion_norm: Optional[motion_maps.MotionNorm] = None):
    self._model = model
    self._data_cfg = data_cfg
    self._batch_size = batch_size
    self._score = scores.get_score(score)
    self._stats = score_stats
    self.motion_norm = scores.motion_norm_for(score, motion_norm)
    if self._score.parts and score_stats is None:
      raise errors.ConfigError(
          f"--score={score} needs the normal-frame statistics of its parts in "
          f"{run_dir.SCORE_STATS_FILE}: run python -m daml_tf.calibrate --score={score} first.")
    needs_frames = self._score.needs_frames

    def skips_and_code(frames):
      features = model.encode(frames, training=False)
      # The skips are kept only for the scores that decode a frame.
      return (list(features[:-1]) if needs_frames else []) + [model.code_of(features)]

    self._encode = tf.function(skips_and_code)
    self._score_batch = tf.function(self._score_clips)

  def _score_clips(self, past, target, last_skips, target_frames, target_motion,
                   with_maps=False):
    predicted = self._model.motion(past, training=False)
    predicted_frame = (self._model.decoder([self._model.predicted_latent_of(predicted)] +
                                           list(last_skips), training=False)
                       if self._score.needs_frames else None)
    inputs = scores.ScoreInputs(predicted, target, predicted_frame, target_frames,
                                target_motion)
    values = scores.compute(self._score.name, inputs, self._stats)
    if with_maps:
      return values, scores.latent_error_map(predicted, target)
    return values

  def encode(self, frames: np.ndarray) -> List[tf.Tensor]:
    """Every frame's code (`DAML.code_of`: the latent code, unless the motion model reads other
    levels too), last, after the skip features of every other level when frames are scored."""
    batches = [self._encode(frames[start:start + self._batch_size])
               for start in range(0, len(frames), self._batch_size)]
    return [tf.concat(level, axis=0) for level in zip(*batches)]

  def score(self, frames: np.ndarray, motion: Optional[np.ndarray] = None
            ) -> Tuple[np.ndarray, np.ndarray]:
    """Raw scores of the predictable frames of one video.

    Args:
      frames: [N, H, W, C] background-subtracted frames.
      motion: [N, h, w] the video's motion maps (`motion_of`), for a score of motion evidence.

    Returns:
      (frame_indices, scores): the 0-based indices of the scored (target) frames and their
      scores; the first `clip_span` frames cannot be predicted and are absent.
    """
    frame_indices, values, _ = self._score_frames(frames, motion, with_maps=False)
    return frame_indices, values

  def score_and_map(self, frames: np.ndarray, motion: Optional[np.ndarray] = None
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`score`, plus each scored frame's latent error map: float32 [n, h, w]
    (daml_tf.models.scores.latent_error_map)."""
    return self._score_frames(frames, motion, with_maps=True)

  def motion_of(self, video: layout.Video, perturbation=None) -> Optional[np.ndarray]:
    """`motion_of` the video with this scorer's normalisation; None unless the score needs
    motion maps."""
    return None if self.motion_norm is None else motion_of(video, self.motion_norm, perturbation)

  def _score_frames(self, frames: np.ndarray, motion: Optional[np.ndarray], with_maps: bool):
    if self.motion_norm is not None and (motion is None or len(motion) != len(frames)):
      raise ValueError(f"--score={self._score.name} needs a motion map for each of the "
                       f"{len(frames)} frames.")
    cfg = self._data_cfg
    clips = pipeline.clip_indices(len(frames), cfg.time_steps, cfg.interval, cfg.delta)
    if not len(clips):
      return (np.zeros([0], np.int64), np.zeros([0], np.float32),
              np.zeros([0, 0, 0], np.float32) if with_maps else None)
    features = self.encode(frames)
    codes = features[-1]
    values, maps = [], []
    for start in range(0, len(clips), self._batch_size):
      rows = clips[start:start + self._batch_size]
      last_skips = [tf.gather(level, rows[:, -2]) for level in features[:-1]]
      target_frames = tf.gather(frames, rows[:, -1]) if self._score.needs_frames else None
      target_motion = None if motion is None else tf.gather(motion, rows[:, -1])
      out = self._score_batch(tf.gather(codes, rows[:, :-1]), tf.gather(codes, rows[:, -1]),
                              last_skips, target_frames, target_motion, with_maps)
      if with_maps:
        out, batch_maps = out
        maps.append(batch_maps.numpy())
      values.append(out.numpy())
    return clips[:, -1], np.concatenate(values), np.concatenate(maps) if with_maps else None


def video_speed(video: layout.Video, grid: Tuple[int, int], scale: float,
                perturbation=None) -> np.ndarray:
  """[N, h, w] the pooled flow speed of every frame of `video` (motion_maps.video_speed), from
  its frames as stored (the camera's resolution) with the test-time `perturbation`."""
  frames = (perturbed(video_io.read_image(path), perturbation) for path in video.frame_paths)
  return motion_maps.video_speed(frames, grid, scale)


def motion_of(video: layout.Video, norm: motion_maps.MotionNorm,
              perturbation=None) -> np.ndarray:
  """[N, h, w] the motion maps of every frame of `video` (video_speed, normalised)."""
  return norm.normalize(video_speed(video, norm.grid, norm.scale, perturbation))


def perturbed(frame: np.ndarray, perturbation) -> np.ndarray:
  """A uint8 frame with a test-time perturbation (perturb.parse_perturbation) applied."""
  if perturbation is None:
    return frame
  return np.rint(np.asarray(perturbation(frame / np.float32(255))) * 255).astype(np.uint8)


def scorer_for(model: DAML, cfg: config_lib.Config, model_dir: str) -> VideoScorer:
  """The VideoScorer of cfg.eval.score, with a fusion's statistics or a motion score's flow
  normalisation from `model_dir`."""
  score = scores.get_score(cfg.eval.score)
  stats = run_dir.load_score_stats(model_dir) if score.parts else None
  norm = scores.motion_norm_for(score.name, run_dir.load_motion_norm(model_dir), model_dir)
  return VideoScorer(model, cfg.data, cfg.eval.batch_size, cfg.eval.score, stats, norm)


def test_split(cfg: config_lib.Config):
  """(videos, per-video frame labels) of the test split; labels are checked against the
  frames found before any frame is scored."""
  root, videos = layout.find_videos(cfg.data.dataset, cfg.data.data_dir, "testing")
  spec = registry.get_spec(cfg.data.dataset)
  label_path = labels_lib.find_label_file(spec, root, cfg.data.label_file)
  return videos, labels_lib.load_labels(label_path, spec.label_format, videos)


def score_videos(scorer: VideoScorer, videos: Sequence[layout.Video],
                 labels: Sequence[np.ndarray], cfg: config_lib.Config,
                 background: np.ndarray, error_maps: bool = False) -> Iterator:
  """Yields (video, scored frame indices, raw scores, the video's labels, error maps) video by
  video, with cfg.eval.perturb applied to the frames; the error maps ([n, h, w], see
  VideoScorer.score_and_map) are None unless `error_maps`."""
  perturbation = perturb_lib.parse_perturbation(cfg.eval.perturb)
  progress = progress_lib.Progress(len(videos), unit_name="video")
  for number, (video, video_labels) in enumerate(zip(videos, labels), start=1):
    frames = pipeline.load_video(video, cfg.data.image_size, cfg.data.channels, background,
                                 transform=perturbation)
    motion = scorer.motion_of(video, perturbation)
    if error_maps:
      frame_indices, raw, maps = scorer.score_and_map(frames, motion)
    else:
      (frame_indices, raw), maps = scorer.score(frames, motion), None
    yield video, frame_indices, raw, video_labels, maps
    progress.update(number, lambda: f"video {video.name} ({number}/{len(videos)}): "
                    f"{len(raw)} of {video.num_frames} frames scored")


def top_frames(values: np.ndarray, count: int) -> np.ndarray:
  """Positions of the `count` highest values, highest first (the earlier one on a tie)."""
  return np.argsort(-np.asarray(values), kind="stable")[:count]


def write_heatmaps(output_dir: str, video: layout.Video, result: report.VideoScores,
                   maps: np.ndarray, count: int, perturb: str = "") -> List[str]:
  """PNGs of the `count` highest-scoring frames of one video (see report.write_heatmap_png).

  Each is drawn on the frame as stored (its own size, with the test-time perturbation the
  scores saw), the box red when the frame is labelled anomalous, yellow when normal.

  Returns:
    The files written, highest score first.
  """
  perturbation = perturb_lib.parse_perturbation(perturb)
  paths = []
  for position in top_frames(result.scores, count):
    frame_index = int(result.frame_indices[position])
    frame = perturbed(video_io.read_image(video.frame_paths[frame_index]), perturbation)
    anomalous = bool(result.labels[position])
    text = (f"{video.name} #{frame_index} score {result.scores[position]:.4g} "
            f"({result.normalized[position]:.2f}) {'anomalous' if anomalous else 'normal'}")
    path = os.path.join(output_dir, run_dir.HEATMAPS_SUBDIR, f"{video.name}_{frame_index}.png")
    report.write_heatmap_png(path, frame, maps[position], text, anomalous)
    paths.append(path)
  return paths


def evaluate(cfg: config_lib.Config, model: DAML = None) -> Dict[str, float]:
  """Scores the test split of `cfg.data`, writes metrics.json, scores.csv and plots.

  Args:
    cfg: the run's config; `cfg.train.model_dir` holds the checkpoint unless `model` is given.
    model: an already restored model (tests, or right after training).

  Returns:
    The metrics dict written to metrics.json (without the config).
  """
  videos, labels = test_split(cfg)
  if model is None:
    model = run_dir.restore_model(cfg)
  background = model.background.numpy()
  output_dir = cfg.eval.output_dir or run_dir.eval_dir(cfg.train.model_dir)
  fileio.makedirs(output_dir)

  scorer = scorer_for(model, cfg, cfg.train.model_dir)
  smoothing = smoothing_lib.parse(cfg.eval.smoothing)
  results: List[report.VideoScores] = []
  for video, frame_indices, raw, video_labels, maps in score_videos(
      scorer, videos, labels, cfg, background, error_maps=cfg.eval.heatmaps > 0):
    smoothed = smoothing_lib.smooth(raw, smoothing).astype(np.float32)
    results.append(report.VideoScores(
        name=video.name, frame_indices=frame_indices, scores=smoothed,
        normalized=metrics_lib.normalize_scores(smoothed, cfg.eval.normalize),
        labels=video_labels[frame_indices]))
    if cfg.eval.heatmaps:
      write_heatmaps(output_dir, video, results[-1], maps, cfg.eval.heatmaps, cfg.eval.perturb)

  metrics = metrics_lib.evaluate_scores(
      [r.scores for r in results], [r.labels for r in results], cfg.eval.normalize)
  num_frames = int(sum(v.num_frames for v in videos))
  metrics.update(num_frames=num_frames, num_videos=len(videos),
                 num_skipped_frames=num_frames - int(metrics["num_scored_frames"]),
                 normalize=cfg.eval.normalize, perturb=cfg.eval.perturb,
                 score=cfg.eval.score, smoothing=cfg.eval.smoothing)
  logging.info("Scored %d of %d test frames in %d videos (the first %d frames of each video "
               "cannot be predicted)", metrics["num_scored_frames"], num_frames, len(videos),
               cfg.data.clip_span)
  report.write_metrics_json(os.path.join(output_dir, "metrics.json"), metrics, cfg.to_dict())
  report.write_scores_csv(os.path.join(output_dir, "scores.csv"), results)
  if cfg.eval.plots:
    for result, video_labels in zip(results, labels):
      report.plot_video_scores(os.path.join(output_dir, f"scores_{result.name}.png"), result,
                               video_labels)
  logging.info("Wrote metrics.json, scores.csv%s%s to %s",
               " and plots" if cfg.eval.plots else "",
               f", {run_dir.HEATMAPS_SUBDIR}/" if cfg.eval.heatmaps else "", output_dir)
  return metrics
