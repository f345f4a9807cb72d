"""Evaluation artefacts: metrics.json, scores.csv and one score-curve PNG per test video.

Every file goes through `tf.io.gfile` so output directories may be remote (gs://, s3://, ...).
TensorFlow and matplotlib are imported inside the writers: the rest of this module (spans,
formatting) stays importable and testable without them.
"""

import csv
import dataclasses
import io
import json
import math
import os
from typing import Any, List, Mapping, Sequence, Tuple

import numpy as np

from daml_tf import fileio
from daml_tf import metrics as metrics_lib

CSV_COLUMNS = ("video", "frame", "score", "normalized_score", "label")


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: `==` on arrays is not a bool.
class VideoScores:
  """Scores of the scored frames of one test video.

  Attributes:
    name: the video's name (e.g. "Test001" or "01_0014").
    frame_indices: 0-based index within the video of each scored frame (the first frames of a
      video cannot be predicted, so these usually start at the clip span).
    scores: raw anomaly score of each scored frame.
    normalized: the scores after the evaluation's normalisation.
    labels: 0/1 ground truth of each scored frame.
  """

  name: str
  frame_indices: np.ndarray
  scores: np.ndarray
  normalized: np.ndarray
  labels: np.ndarray

  def __post_init__(self):
    # Coerce here so every writer can rely on 1-D arrays of one common length.
    for field_name in ("frame_indices", "scores", "normalized", "labels"):
      object.__setattr__(self, field_name, np.ravel(np.asarray(getattr(self, field_name))))
    lengths = {field_name: getattr(self, field_name).size
               for field_name in ("frame_indices", "scores", "normalized", "labels")}
    if len(set(lengths.values())) != 1:
      raise ValueError(f"VideoScores {self.name!r}: fields differ in length: {lengths}.")


def anomalous_spans(labels: np.ndarray) -> List[Tuple[int, int]]:
  """Runs of anomalous frames in a full-length label array.

  Args:
    labels: 1-D 0/1 (or boolean) frame labels of one video.

  Returns:
    (start, end) pairs, end exclusive, of the maximal runs of nonzero labels, in order.
  """
  is_anomalous = np.ravel(np.asarray(labels)) != 0
  # Padding with normal frames at both ends turns every run into one rise and one fall.
  edges = np.diff(np.concatenate(([False], is_anomalous, [False])).astype(np.int8))
  starts = np.flatnonzero(edges == 1)
  ends = np.flatnonzero(edges == -1)
  return [(int(start), int(end)) for start, end in zip(starts, ends)]


def _json_ready(value: Any) -> Any:
  """Converts NumPy values and containers to plain JSON types; non-finite floats become None.

  JSON has no NaN: Python's json module would write the invalid token `NaN`, which strict
  parsers (and jq) reject, while an undefined metric (e.g. macro AUC) is legitimately null.
  """
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    value = dataclasses.asdict(value)
  if isinstance(value, Mapping):
    return {str(key): _json_ready(item) for key, item in value.items()}
  if isinstance(value, (list, tuple, np.ndarray)):
    return [_json_ready(item) for item in value]
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  return value


def _makedirs_for(path: str) -> None:
  import tensorflow as tf  # Deferred: importing TensorFlow takes seconds.
  directory = os.path.dirname(path)
  if directory:
    fileio.makedirs(directory)


def write_metrics_json(path: str, metrics: Mapping[str, Any], config: Mapping[str, Any]) -> None:
  """Writes the metrics and the config they were computed under.

  Args:
    path: destination file; parent directories are created.
    metrics: metric name -> value, written at the top level (e.g. `evaluate_scores` output).
    config: the resolved run configuration (a dict, or a config dataclass), written under
      "config".

  Raises:
    ValueError: `metrics` already has a "config" key.
  """
  import tensorflow as tf
  if "config" in metrics:
    raise ValueError('Metrics must not contain the key "config"; it holds the run config.')
  document = _json_ready(dict(metrics))
  document["config"] = _json_ready(config)
  _makedirs_for(path)
  with fileio.GFile(path, "w") as f:
    f.write(json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n")


def _format_float_column(values: np.ndarray) -> List[str]:
  """Shortest decimal strings that read back as exactly the same values.

  float32 scores are written at float32 precision (at most 9 significant digits) rather than
  with the up to 17 digits their float64 widening would need; anything else goes as float64.
  """
  values = np.asarray(values)
  if not (np.issubdtype(values.dtype, np.floating) and values.dtype.itemsize <= 4):
    values = values.astype(np.float64)
  # NumPy's str() of a scalar is the shortest string that round-trips at the scalar's own
  # precision (Dragon4), switching to exponent notation for very small or large values.
  return [str(value) for value in values]


def write_scores_csv(path: str, rows: Sequence[VideoScores]) -> None:
  """Writes one line per scored frame, videos in the given order.

  Columns are `video,frame,score,normalized_score,label`; `frame` is the 0-based frame index
  within the video. Scores are written in the shortest form that round-trips exactly.

  Args:
    path: destination file; parent directories are created.
    rows: the scored frames of each test video.
  """
  import tensorflow as tf
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(CSV_COLUMNS)
  for video in rows:
    for frame, score, normalized, label in zip(video.frame_indices.astype(np.int64),
                                               _format_float_column(video.scores),
                                               _format_float_column(video.normalized),
                                               video.labels.astype(np.int64)):
      writer.writerow((video.name, int(frame), score, normalized, int(label)))
  _makedirs_for(path)
  with fileio.GFile(path, "w") as f:
    f.write(buffer.getvalue())


def plot_video_scores(path: str, video_scores: VideoScores, all_labels: np.ndarray) -> None:
  """Saves a PNG of one video's normalised score curve over its frames.

  The x axis spans every frame of the video, including the first ones that have no score, and
  the labelled anomalous spans are shaded. The title carries the video's own AUC when its
  scored frames contain both classes.

  Args:
    path: destination .png; parent directories are created.
    video_scores: the video's scored frames.
    all_labels: full-length 0/1 labels of the video (index = frame index).

  Raises:
    ValueError: a scored frame index lies outside `all_labels`.
  """
  # A bare Figure renders with the Agg canvas and never touches pyplot's global backend or
  # figure registry: headless-safe, and nothing to leak if a caller forgets to close it.
  from matplotlib import figure as mpl_figure

  all_labels = np.ravel(np.asarray(all_labels))
  num_frames = all_labels.size
  frame_indices = video_scores.frame_indices
  if frame_indices.size and (frame_indices.min() < 0 or frame_indices.max() >= num_frames):
    raise ValueError(f"Video {video_scores.name!r}: scored frame indices "
                     f"[{frame_indices.min()}, {frame_indices.max()}] fall outside its "
                     f"{num_frames} labelled frames.")

  fig = mpl_figure.Figure(figsize=(10, 3.2), dpi=100)
  axes = fig.add_subplot(1, 1, 1)
  for span_index, (start, end) in enumerate(anomalous_spans(all_labels)):
    # Half-frame margins make each labelled frame a unit-wide cell centred on its index.
    axes.axvspan(start - 0.5, end - 0.5, color="tab:red", alpha=0.2, linewidth=0,
                 label="labelled anomalous" if span_index == 0 else None)
  axes.plot(frame_indices, video_scores.normalized, color="tab:blue", linewidth=1.2,
            label="anomaly score")
  axes.set_xlim(-0.5, max(num_frames, 1) - 0.5)
  axes.set_xlabel("frame index")
  axes.set_ylabel("anomaly score")
  title = video_scores.name
  auc = metrics_lib.video_auc(video_scores.normalized, video_scores.labels)
  if not math.isnan(auc):
    title += f"  (AUC {auc:.4f})"
  # Title left and legend right, both above the axes, so neither hides part of the curve.
  axes.set_title(title, loc="left")
  axes.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False,
              fontsize="small")
  fig.tight_layout()

  save_figure(fig, path)


def save_figure(fig, path: str) -> None:
  """Writes a matplotlib Figure as PNG through tf.io.gfile (so remote paths work)."""
  import tensorflow as tf  # Deferred: importing TensorFlow takes seconds.
  png_buffer = io.BytesIO()
  fig.savefig(png_buffer, format="png")
  fig.clear()
  _makedirs_for(path)
  with fileio.GFile(path, "wb") as f:
    f.write(png_buffer.getvalue())



def write_heatmap_png(path: str, frame: np.ndarray, error_map: np.ndarray, text: str,
                      anomalous: bool) -> None:
  """Saves one evaluated frame as PNG: its latent error heatmap, the anomaly box and `text`.

  The heatmap is scaled to the frame's own maximum (the frames drawn are the highest-scoring
  ones, so there is always a region to show); the box is red when the frame is labelled
  anomalous, yellow when it is labelled normal (daml_tf.localize.annotate).

  Args:
    path: destination .png; parent directories are created.
    frame: uint8 [H, W, 1|3] as stored; the PNG has its size.
    error_map: [h, w] the frame's latent error map.
    text: the caption.
    anomalous: the frame's label.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from daml_tf import localize  # pylint: disable=g-import-not-at-top
  image = localize.annotate(frame, error_map, text,
                            box_color=localize.RED if anomalous else localize.YELLOW)
  buffer = io.BytesIO()
  Image.fromarray(image, "RGB").save(buffer, format="png")
  _makedirs_for(path)
  with fileio.GFile(path, "wb") as f:
    f.write(buffer.getvalue())
