"""Frame-level anomaly metrics: score normalisation, ROC AUC (micro and macro) and EER.

Host-side NumPy and scikit-learn only, so evaluation results can be recomputed from a
scores.csv without TensorFlow. Every function takes scores and 0/1 labels of the *scored*
frames (the first frames of a video, which cannot be predicted, are not part of them); label 1
means anomalous and a higher score means more anomalous.

Functions that pool frames accept either one 1-D array or a list of per-video arrays (which are
concatenated), so the same call works on a single video and on a whole test set.
"""

from typing import Dict, List, Sequence, Tuple, Union

from absl import logging
import numpy as np
from sklearn import metrics as sk_metrics

NORMALIZE_MODES = ("per_video", "none")

ArrayOrVideos = Union[np.ndarray, Sequence[np.ndarray], Sequence[float]]


def normalize_scores(scores: np.ndarray, mode: str) -> np.ndarray:
  """Normalises the raw scores of one test video.

  Args:
    scores: raw anomaly scores of the scored frames of one video, any shape.
    mode: "per_video" rescales them min-max to [0, 1] (the paper's protocol, which needs the
      whole video before any frame can be scored); "none" keeps them raw ("online" scores
      comparable across videos).

  Returns:
    A new float64 array of the same shape. A constant video maps to all zeros rather than the
    0/0 NaNs of the plain formula; an empty video maps to an empty array.

  Raises:
    ValueError: unknown mode, or non-finite scores with mode "per_video" (one NaN would
      silently turn the whole video into NaNs).
  """
  if mode not in NORMALIZE_MODES:
    raise ValueError(f"Unknown normalisation mode {mode!r}; expected one of {NORMALIZE_MODES}.")
  scores = np.array(scores, dtype=np.float64)  # Always a copy: callers may keep the raw array.
  if mode == "none" or scores.size == 0:
    return scores
  if not np.all(np.isfinite(scores)):
    raise ValueError("Cannot min-max normalise scores that contain NaN or infinity.")
  low, high = scores.min(), scores.max()
  if high <= low:
    return np.zeros_like(scores)
  return (scores - low) / (high - low)


def _pool(values: ArrayOrVideos) -> np.ndarray:
  """Flattens one array, or a list of per-video arrays, into one 1-D array of frames."""
  if isinstance(values, np.ndarray):
    return values.ravel()
  parts = [np.ravel(np.asarray(part)) for part in values]
  return np.concatenate(parts) if parts else np.zeros((0,))


def _pooled_scores_and_labels(scores: ArrayOrVideos,
                              labels: ArrayOrVideos) -> Tuple[np.ndarray, np.ndarray]:
  """Pools and validates scores and labels; raises ValueError on anything AUC cannot use."""
  if not isinstance(scores, np.ndarray) and not isinstance(labels, np.ndarray):
    if len(scores) != len(labels):
      raise ValueError(f"Got scores of {len(scores)} videos but labels of {len(labels)}.")
    for index, (video_scores, video_labels) in enumerate(zip(scores, labels)):
      if np.size(video_scores) != np.size(video_labels):
        raise ValueError(f"Video {index}: {np.size(video_scores)} scores but "
                         f"{np.size(video_labels)} labels.")
  pooled_scores = _pool(scores).astype(np.float64)
  pooled_labels = _pool(labels)
  if pooled_scores.shape != pooled_labels.shape:
    raise ValueError(f"Got {pooled_scores.size} scores but {pooled_labels.size} labels.")
  if not np.all(np.isin(pooled_labels, (0, 1))):
    raise ValueError("Labels must be 0 (normal) or 1 (anomalous).")
  if not np.all(np.isfinite(pooled_scores)):
    raise ValueError("Scores contain NaN or infinity.")
  return pooled_scores, pooled_labels.astype(np.int64)


def _require_both_classes(labels: np.ndarray, metric_name: str) -> None:
  num_anomalous = int(labels.sum())
  if num_anomalous == 0 or num_anomalous == labels.size:
    raise ValueError(
        f"{metric_name} needs both normal and anomalous frames, but all {labels.size} pooled "
        f"frames are {'anomalous' if num_anomalous else 'normal'}; it is undefined here.")


def micro_auc(scores_per_video: ArrayOrVideos, labels_per_video: ArrayOrVideos) -> float:
  """Frame-level ROC AUC with the frames of all videos pooled into one ranking.

  This is the number usually reported for these benchmarks. Because frames of different videos
  are ranked against each other, it depends on how scores are normalised per video.

  Args:
    scores_per_video: per-video 1-D score arrays (or one pooled array).
    labels_per_video: matching per-video 0/1 label arrays.

  Returns:
    The AUC in [0, 1]; tied scores count one half, as in sklearn.

  Raises:
    ValueError: mismatched lengths, non-binary labels, non-finite scores, or pooled frames of
      only one class (where AUC is undefined and sklearn would otherwise return NaN).
  """
  scores, labels = _pooled_scores_and_labels(scores_per_video, labels_per_video)
  _require_both_classes(labels, "Micro AUC")
  return float(sk_metrics.roc_auc_score(labels, scores))


def video_auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """ROC AUC of one video's frames only (nothing pooled across videos).

  Args:
    scores: 1-D scores of the video's scored frames.
    labels: matching 0/1 labels.

  Returns:
    The AUC, or NaN when the video has frames of only one class (common: many test videos
    are entirely normal or entirely anomalous once the unscored frames are dropped).
  """
  scores, labels = _pooled_scores_and_labels(np.asarray(scores), np.asarray(labels))
  if labels.size == 0 or labels.min() == labels.max():
    return float("nan")
  return float(sk_metrics.roc_auc_score(labels, scores))


def macro_auc(scores_per_video: Sequence[np.ndarray],
              labels_per_video: Sequence[np.ndarray]) -> float:
  """Mean of the per-video ROC AUCs; nothing is pooled across videos.

  Videos with frames of only one class have no AUC and are skipped (and counted in the log).
  Per-video AUC is invariant to any monotonic per-video normalisation.

  Args:
    scores_per_video: per-video 1-D score arrays.
    labels_per_video: matching per-video 0/1 label arrays.

  Returns:
    The unweighted mean AUC over the videos that contain both classes, or NaN if none do.
  """
  if len(scores_per_video) != len(labels_per_video):
    raise ValueError(f"Got scores of {len(scores_per_video)} videos but labels of "
                     f"{len(labels_per_video)}.")
  aucs: List[float] = [
      video_auc(scores, labels) for scores, labels in zip(scores_per_video, labels_per_video)]
  defined_aucs = [auc for auc in aucs if not np.isnan(auc)]
  num_skipped = len(aucs) - len(defined_aucs)
  if num_skipped:
    logging.info("Macro AUC: skipped %d of %d videos that contain only one class.",
                 num_skipped, len(aucs))
  if not defined_aucs:
    logging.warning("Macro AUC is undefined: no video contains both classes.")
    return float("nan")
  return float(np.mean(defined_aucs))


def equal_error_rate(scores: ArrayOrVideos, labels: ArrayOrVideos) -> float:
  """Equal error rate with the frames of all videos pooled into one ranking.

  The EER is the error rate at the threshold where the false-positive rate equals the
  false-negative rate (1 - true-positive rate). Between the two ROC points around the
  crossing, both rates are linear in the position along the ROC segment, so interpolating
  linearly gives the exact crossing of the piecewise-linear ROC curve.

  Args:
    scores: per-video 1-D score arrays, or one pooled array.
    labels: matching 0/1 labels in the same layout.

  Returns:
    The EER in [0, 1]; 0 when the classes are perfectly separated.

  Raises:
    ValueError: as for `micro_auc`, including pooled frames of only one class.
  """
  pooled_scores, pooled_labels = _pooled_scores_and_labels(scores, labels)
  _require_both_classes(pooled_labels, "EER")
  # drop_intermediate=False keeps every threshold; the dropped points are collinear anyway,
  # but keeping them makes the crossing search easy to check by hand.
  fpr, tpr, _ = sk_metrics.roc_curve(pooled_labels, pooled_scores, drop_intermediate=False)
  fnr = 1.0 - tpr
  # gap runs from -1 at (fpr=0, tpr=0) to +1 at (fpr=1, tpr=1) and never decreases.
  gap = fpr - fnr
  crossing = int(np.argmax(gap >= 0))
  if gap[crossing] == 0 or crossing == 0:
    return float(fpr[crossing])
  before = crossing - 1
  fraction = -gap[before] / (gap[crossing] - gap[before])
  return float(fpr[before] + fraction * (fpr[crossing] - fpr[before]))


def evaluate_scores(scores_per_video: Sequence[np.ndarray],
                    labels_per_video: Sequence[np.ndarray],
                    normalize: str) -> Dict[str, Union[float, int]]:
  """Normalises each video's scores, then computes every frame-level metric.

  Args:
    scores_per_video: per-video 1-D raw score arrays of the scored frames.
    labels_per_video: matching per-video 0/1 label arrays.
    normalize: a `normalize_scores` mode, applied to each video separately.

  Returns:
    {"micro_auc": pooled AUC, "macro_auc": mean per-video AUC (NaN if no video has both
    classes), "eer": pooled EER, "num_scored_frames": total frames scored}, all computed on the
    normalised scores.

  Raises:
    ValueError: unknown mode, or inputs `micro_auc` rejects.
  """
  normalized = [normalize_scores(scores, normalize) for scores in scores_per_video]
  labels = [np.asarray(video_labels) for video_labels in labels_per_video]
  return {
      "micro_auc": micro_auc(normalized, labels),
      "macro_auc": macro_auc(normalized, labels),
      "eer": equal_error_rate(normalized, labels),
      "num_scored_frames": int(sum(scores.size for scores in normalized)),
  }
