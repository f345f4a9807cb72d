"""Driving a streaming detector over a recorded video or frames folder: scores, plot, annotation.

`python -m daml_tf.detect` calls `run_detection`.
"""

import csv
import dataclasses
import io
import os
import time
from typing import List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from daml_tf import errors
from daml_tf import report
from daml_tf import video_io
from daml_tf.inference import litert
from daml_tf.inference.streaming import FrameResult
from daml_tf.inference.streaming import StreamingDetector

SCORES_FILE = "scores.csv"
PLOT_FILE = "scores.png"
ANNOTATED_BASENAME = "annotated"
CSV_COLUMNS = ("frame", "timestamp_s", "score", "alarm")


@dataclasses.dataclass(frozen=True)
class DetectionSummary:
  """What `run_detection` did.

  Attributes:
    frames: frames read.
    scored: frames with a score.
    alarms: frames with an alarm.
    mean_fps: frames per second over the whole run (decode, score, annotate).
    threshold: the threshold used (None: no alarms).
    stopped_at: index of the frame where decoding stopped early, or None if the input was
      read to its end.
    scores_csv, plot_png: the files written.
    annotated_video: the annotated video, or None.
  """

  frames: int
  scored: int
  alarms: int
  mean_fps: float
  threshold: Optional[float]
  stopped_at: Optional[int]
  scores_csv: str
  plot_png: str
  annotated_video: Optional[str]


def annotate_frame(frame: np.ndarray, result: FrameResult, threshold: Optional[float],
                   smoothed: bool = False) -> np.ndarray:
  """The frame as RGB with its score (the thresholded one) and, on an alarm, an ALARM banner.

  Args:
    frame: uint8 [H, W, 1|3], as read.
    result: the detector's result for it.
    threshold: shown next to the score when given.
    smoothed: the detector smooths; the smoothed score is shown (and labelled so).

  Returns:
    uint8 [H, W, 3].
  """
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  if frame.shape[-1] == 1:
    frame = np.repeat(frame, 3, axis=-1)
  image = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8), "RGB")
  draw = ImageDraw.Draw(image)
  width, height = image.size
  if result.score is None:
    text = f"#{result.index} warming up"
  else:
    label = "smoothed" if smoothed else "score"
    text = f"#{result.index} {label} {result.smoothed:.4g}"
    if threshold is not None:
      text += f" / {threshold:.4g}"
  left, top, right, bottom = draw.textbbox((0, 0), text)
  # A dark box under the text keeps it legible on any background.
  text_y = height - (bottom - top) - 4
  draw.rectangle([0, text_y - 2, right - left + 4, height], fill=(0, 0, 0))
  draw.text((2, text_y - top), text, fill=(255, 255, 255))
  if result.alarm:
    _, banner_top, _, banner_bottom = draw.textbbox((0, 0), "ALARM")
    banner_height = banner_bottom - banner_top + 6
    draw.rectangle([0, 0, width, banner_height], fill=(220, 0, 0))
    draw.text((3, 3 - banner_top), "ALARM", fill=(255, 255, 255))
    draw.rectangle([0, 0, width - 1, height - 1], outline=(220, 0, 0), width=2)
  return np.asarray(image)


def _format_score(score: Optional[float]) -> str:
  # float32 precision, shortest round-trip form, as report.write_scores_csv writes scores.
  return "" if score is None else str(np.float32(score))


def write_detection_csv(path: str, rows: Sequence[Tuple[int, float, FrameResult]]) -> None:
  """Writes `frame,timestamp_s,score,alarm` (empty score for unscored frames)."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(CSV_COLUMNS)
  for index, timestamp, result in rows:
    writer.writerow((index, f"{timestamp:.6g}", _format_score(result.score), int(result.alarm)))
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(buffer.getvalue())


def plot_detection(path: str, rows: Sequence[Tuple[int, float, FrameResult]],
                   threshold: Optional[float], title: str) -> None:
  """Saves a PNG of the raw (and smoothed) score curve with the threshold and alarm spans."""
  # A bare Figure renders with Agg without touching pyplot's global state (as report.py).
  from matplotlib import figure as mpl_figure  # pylint: disable=g-import-not-at-top
  indices = np.array([index for index, _, _ in rows], np.int64)
  scored = [(index, r) for index, _, r in rows if r.score is not None]
  alarms = np.array([r.alarm for _, _, r in rows], bool)
  fig = mpl_figure.Figure(figsize=(10, 3.2), dpi=100)
  axes = fig.add_subplot(1, 1, 1)
  for span_number, (start, end) in enumerate(report.anomalous_spans(alarms)):
    axes.axvspan(indices[start] - 0.5, indices[end - 1] + 0.5, color="tab:red", alpha=0.2,
                 linewidth=0, label="alarm" if span_number == 0 else None)
  if scored:
    xs = [index for index, _ in scored]
    axes.plot(xs, [r.score for _, r in scored], color="tab:blue", linewidth=1.0,
              label="score")
    if any(r.smoothed != r.score for _, r in scored):
      axes.plot(xs, [r.smoothed for _, r in scored], color="tab:orange", linewidth=1.2,
                label="smoothed")
  if threshold is not None:
    axes.axhline(threshold, color="tab:red", linestyle="--", linewidth=1.0, label="threshold")
  axes.set_xlim(-0.5, max(len(indices), 1) - 0.5)
  axes.set_xlabel("frame index")
  axes.set_ylabel("raw anomaly score")
  axes.set_title(title, loc="left")
  axes.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=4, frameon=False,
              fontsize="small")
  fig.tight_layout()
  report.save_figure(fig, path)


def run_detection(model_dir: str, input_path: str, output_dir: str,
                  threshold: Optional[float] = None, smoothing_window: int = 1,
                  score: str = "", smoothing: str = "",
                  annotate: bool = False, fps: float = video_io.DEFAULT_FPS,
                  log_every: int = 100, litert_precision: str = "float32") -> DetectionSummary:
  """Runs the streaming detector over a recorded video or frames folder.

  Writes `<output_dir>/scores.csv` (frame,timestamp_s,score,alarm; empty score for the first
  clip_span frames), `<output_dir>/scores.png` and, with `annotate`, `<output_dir>/annotated.mp4`
  (libx264) or `annotated.avi` (mpeg4 or mjpeg, whichever encoder FFmpeg has).

  A video that stops decoding part-way keeps the frames before: the outputs are written for
  them and `stopped_at` says where it stopped (a warning is logged too).

  Args:
    model_dir: a training run's directory, or a serving or LiteRT export (see backends.open_model).
    input_path: a video file or a folder of frames.
    output_dir: created if needed.
    threshold: overrides the stored threshold (`<model_dir>/threshold.json`, or the one
      recorded in an export); with neither, no frame raises an alarm.
    smoothing_window: causal moving average of the raw scores before thresholding.
    score: overrides the model's configured score (a latent score of models.scores).
    smoothing: a causal smoothing spec (ma:N, ema:A); overrides smoothing_window.
    annotate: also write the annotated video.
    fps: frame rate of a frames folder (timestamps, annotated video).
    log_every: frames between progress lines.
    litert_precision: "float32" or "float16": the flatbuffers run for a LiteRT export.

  Returns:
    DetectionSummary.

  Raises:
    FileNotFoundError: input_path, or the model's config or checkpoint, is missing.
    config.ConfigError: smoothing_window < 1, fps <= 0 or an unknown litert_precision.
    errors.DataError: the input holds no readable frame.
  """
  if smoothing_window < 1:
    raise errors.ConfigError(f"--smoothing_window must be >= 1, got {smoothing_window}.")
  if fps <= 0:
    raise errors.ConfigError(f"--fps must be > 0, got {fps}.")
  if litert_precision not in litert.PRECISIONS:
    raise errors.ConfigError(f"--litert_precision must be one of {litert.PRECISIONS}, got "
                           f"{litert_precision!r}.")
  if not tf.io.gfile.exists(input_path):
    raise FileNotFoundError(
        f"Input {input_path!r} does not exist: give a video file or a folder of frames.")
  if not tf.io.gfile.isdir(model_dir):
    raise FileNotFoundError(f"Model directory {model_dir!r} does not exist.")
  detector = StreamingDetector.from_model_dir(model_dir, threshold, smoothing_window,
                                              litert_precision, score=score,
                                              smoothing=smoothing)
  if detector.threshold is None:
    logging.warning("No threshold (no --threshold, none stored with %s): scores only, no "
                    "alarms.", model_dir)
  tf.io.gfile.makedirs(output_dir)

  writer = None
  video_path = None
  if annotate:
    codec, extension = video_io.pick_output_format()
    video_path = os.path.join(output_dir, ANNOTATED_BASENAME + extension)
    writer = video_io.VideoWriter(video_path, fps=video_io.video_fps(input_path, fps),
                                  codec=codec)
  rows: List[Tuple[int, float, FrameResult]] = []
  stopped_at = None
  start = window_start = time.perf_counter()
  try:
    try:
      for index, timestamp, frame in video_io.iter_frames(input_path, fps):
        result = detector.process(frame)
        rows.append((index, timestamp, result))
        if writer is not None:
          writer.write(annotate_frame(frame, result, detector.threshold,
                                      detector.smoothing.kind != "none"))
        if log_every and len(rows) % log_every == 0:
          now = time.perf_counter()
          logging.info("frame %d: %.1f fps (last %d frames), %d alarms so far", index,
                       log_every / max(now - window_start, 1e-9), log_every,
                       sum(r.alarm for _, _, r in rows))
          window_start = now
    except video_io.DecodeStopped as e:
      if not rows:
        raise errors.DataError(f"No frame of {input_path!r} could be read: {e.reason}") from e
      stopped_at = e.index
      logging.warning("%s; writing the results of the %d frames read.", e, len(rows))
  finally:
    if writer is not None:
      writer.close()
  elapsed = time.perf_counter() - start

  scores_csv = os.path.join(output_dir, SCORES_FILE)
  plot_png = os.path.join(output_dir, PLOT_FILE)
  write_detection_csv(scores_csv, rows)
  plot_detection(plot_png, rows, detector.threshold, os.path.basename(input_path.rstrip("/")))
  summary = DetectionSummary(
      frames=len(rows), scored=sum(r.score is not None for _, _, r in rows),
      alarms=sum(r.alarm for _, _, r in rows), mean_fps=len(rows) / max(elapsed, 1e-9),
      threshold=detector.threshold, stopped_at=stopped_at, scores_csv=scores_csv,
      plot_png=plot_png, annotated_video=video_path)
  logging.info("frames=%d scored=%d alarms=%d mean_fps=%.1f%s; wrote %s", summary.frames,
               summary.scored, summary.alarms, summary.mean_fps,
               "" if stopped_at is None else f" (decoding stopped at frame {stopped_at})",
               output_dir)
  return summary
