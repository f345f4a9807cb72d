"""Event-level evaluation of a model's scores.csv: the alarms an operator would have seen.

`python -m daml_tf.evaluate_events --scores_csv=<output_dir>/scores.csv
 [--threshold=F | --model_dir=<run holding threshold.json>] [--fps=10]
 [--min_frames=1 --end_ratio=1.0 --cooldown_s=0] [--smoothing=ma:N|ema:A] [--output=events.json]
 [--sweep]`

Reads the per-frame scores that `python -m daml_tf.evaluate ... --normalize=none` writes, runs
them through the alarm state machine (daml_tf.service.alarms: debounce, hysteresis, cooldown)
at the given threshold, and measures the alarms against the frame labels
(daml_tf.service.event_metrics): event recall, false alarms per hour of normal footage, delays.
Prints `event_recall=... false_alarms_per_hour=... mean_delay_s=...`; --output also writes the
metrics, the settings and each video's intervals and alarms as JSON.

The `score` column is used (raw, or smoothed as evaluate smoothed it); --smoothing adds a
causal filter on top, as the detector applies one live. The defaults apply no false-alarm
controls, so the result is the detector's own; the service's defaults
(daml_tf.service.config.AlarmConfig) are what --sweep helps choose.

Frames missing from the CSV: a video's rows must be consecutive frames, but they may start
after frame 0 (the first frames of a video cannot be predicted, so evaluate writes no row for
them). Those leading frames count as not alarming and, since the CSV holds no labels for them,
neither as normal footage nor as part of an anomalous interval: an interval that is already
anomalous at a video's first scored frame has its delay counted from that frame, the first at
which the model could have alarmed, not from the anomaly's true start.
"""

import csv
import dataclasses
import io
import itertools
import json
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging
import numpy as np

from daml_tf import cli
from daml_tf import dataclass_flags
from daml_tf import errors
from daml_tf import fileio
from daml_tf import run_dir
from daml_tf import smoothing as smoothing_lib
from daml_tf.service import event_metrics

FLAGS = flags.FLAGS

# The --sweep grid: the false-alarm controls the service has defaults for.
SWEEP_MIN_FRAMES = (1, 2, 3, 5)
SWEEP_COOLDOWN_S = (0.0, 2.0, 5.0)
SWEEP_END_RATIO = (1.0, 0.8)
_CSV_COLUMNS = ("video", "frame", "score", "label")


_option = dataclass_flags.option


@dataclasses.dataclass(frozen=True)
class EventEvalConfig:
  """What to evaluate and how; one flag per field (`define_flags`)."""

  scores_csv: str = dataclasses.field(metadata={
      "help": "The scores.csv that python -m daml_tf.evaluate --normalize=none wrote."})
  threshold: Optional[float] = _option(
      None, "Alarm threshold on the CSV's score column (unset: --model_dir's threshold.json).")
  model_dir: str = _option(
      "", "A training run whose threshold.json (python -m daml_tf.calibrate) gives the "
      "threshold, when --threshold is unset.")
  fps: float = _option(10.0, "Frame rate of the footage (UCSD Ped2: 10): the cooldown and the "
                       "delays are in seconds, the false-alarm rate per hour.")
  min_frames: int = _option(1, "Debounce: an alarm starts at the min_frames-th consecutive "
                            "frame above the threshold (1: at the first).")
  end_ratio: float = _option(1.0, "Hysteresis: an alarm ends at the first frame below "
                             "end_ratio * threshold (1: no hysteresis).")
  cooldown_s: float = _option(0.0, "Alarms less than this many seconds apart (end to next "
                              "start) merge into one (0: never).")
  smoothing: str = _option("none", "Causal smoothing of the scores before the alarms: none, "
                           "ma:N (mean of the last N) or ema:A (exponential).")
  output: str = _option("", "Also write the results as JSON here.")
  sweep: bool = _option(False, "Also evaluate every combination of min_frames in "
                        f"{SWEEP_MIN_FRAMES}, cooldown_s in {SWEEP_COOLDOWN_S} and end_ratio "
                        f"in {SWEEP_END_RATIO}, and print them as a table.")

  def __post_init__(self):
    if not self.scores_csv:
      raise errors.ConfigError("--scores_csv is required.")
    if self.threshold is None and not self.model_dir:
      raise errors.ConfigError("No threshold: give --threshold=F or --model_dir=<a run holding "
                               f"{run_dir.THRESHOLD_FILE}>.")
    if self.threshold is not None and self.model_dir:
      raise errors.ConfigError("Give --threshold or --model_dir, not both.")
    if self.threshold is not None and not math.isfinite(self.threshold):
      raise errors.ConfigError(f"--threshold must be a finite number, got {self.threshold}.")
    if not self.fps > 0:
      raise errors.ConfigError(f"--fps must be > 0, got {self.fps}.")
    if self.min_frames < 1:
      raise errors.ConfigError(f"--min_frames must be >= 1, got {self.min_frames}.")
    if not 0 < self.end_ratio <= 1:
      raise errors.ConfigError(f"--end_ratio must be in (0, 1], got {self.end_ratio}.")
    if self.cooldown_s < 0:
      raise errors.ConfigError(f"--cooldown_s must be >= 0, got {self.cooldown_s}.")
    if not smoothing_lib.parse(self.smoothing).causal:
      # A centred filter would let an alarm see frames that had not been filmed yet.
      raise errors.ConfigError(f"--smoothing={self.smoothing} looks at later frames; alarms "
                               "are raised live: use none, ma:N or ema:A.")


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines one flag per EventEvalConfig field (idempotent)."""
  dataclass_flags.define_flags(EventEvalConfig, flag_values)


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> EventEvalConfig:
  """The frozen config of the parsed flags; ConfigError names a bad flag."""
  return dataclass_flags.config_from_flags(EventEvalConfig, flag_values)


@dataclasses.dataclass(frozen=True)
class VideoScores:
  """One video's rows of a scores.csv.

  Attributes:
    name: the video column.
    first_frame: the frame of its first row; row i is frame first_frame + i.
    scores: [num_rows] float64 scores.
    labels: [num_rows] frame labels (1 anomalous, 0 normal).
  """

  name: str
  first_frame: int
  scores: np.ndarray
  labels: np.ndarray


def read_scores_csv(path: str) -> List[VideoScores]:
  """The videos of a scores.csv in the order they first appear; DataError if it is missing or
  malformed, or a video's frames are not consecutive."""
  if not fileio.exists(path):
    raise errors.DataError(f"No scores file {path!r}: write one with python -m daml_tf.evaluate "
                           "--model_dir=<run> --normalize=none (its <output_dir>/scores.csv).")
  with fileio.GFile(path) as f:
    reader = csv.DictReader(io.StringIO(f.read()))
    missing = [column for column in _CSV_COLUMNS if column not in (reader.fieldnames or ())]
    if missing:
      raise errors.DataError(f"{path!r} has no {', '.join(missing)} column: not a scores.csv "
                             "of python -m daml_tf.evaluate.")
    rows: Dict[str, List[Tuple[int, float, int]]] = {}
    for row in reader:
      try:
        frame, score, label = int(row["frame"]), float(row["score"]), int(row["label"])
      except (TypeError, ValueError):
        label = None
      if label not in (0, 1):
        raise errors.DataError(f"{path!r} line {reader.line_num}: expected a whole frame "
                               "number, a numeric score and a 0/1 label.")
      rows.setdefault(row["video"], []).append((frame, score, label))
  if not rows:
    raise errors.DataError(f"{path!r} holds no scored frames.")
  videos = []
  for name, video_rows in rows.items():
    video_rows.sort()
    frames = np.array([frame for frame, _, _ in video_rows])
    if np.any(np.diff(frames) != 1):
      # Without a row a frame has no label: a gap inside a video cannot be told apart from
      # normal or anomalous footage.
      raise errors.DataError(f"{path!r}: the frames of video {name} are not consecutive "
                             f"(frames {frames[0]} to {frames[-1]} in {frames.size} rows).")
    videos.append(VideoScores(
        name=name, first_frame=int(frames[0]),
        scores=np.array([score for _, score, _ in video_rows], np.float64),
        labels=np.array([label for _, _, label in video_rows], np.int64)))
  return videos


def resolve_threshold(cfg: EventEvalConfig) -> Dict[str, Any]:
  """The threshold and where it came from: {"threshold", "threshold_file", "quantile"}."""
  if cfg.threshold is not None:
    return {"threshold": float(cfg.threshold), "threshold_file": None, "quantile": None}
  stored = run_dir.load_threshold(cfg.model_dir)
  if stored is None:
    raise errors.DataError(
        f"No {run_dir.THRESHOLD_FILE} in {cfg.model_dir!r}: calibrate the run (python -m "
        f"daml_tf.calibrate --model_dir={cfg.model_dir}) or give --threshold.")
  _check_threshold_score(cfg.scores_csv, stored.get("score"))
  return {"threshold": float(stored["threshold"]),
          "threshold_file": os.path.join(cfg.model_dir, run_dir.THRESHOLD_FILE),
          "quantile": stored.get("quantile")}


def _evaluation_metrics(scores_csv: str) -> Dict[str, Any]:
  """The metrics.json evaluate wrote beside scores_csv ({} if there is none)."""
  path = os.path.join(os.path.dirname(scores_csv), "metrics.json")
  if not fileio.exists(path):
    return {}
  with fileio.GFile(path) as f:
    return json.load(f)


def _check_threshold_score(scores_csv: str, threshold_score: Optional[str]) -> None:
  """Refuses a threshold calibrated for another score than the CSV's (when both say theirs):
  the numbers would not be comparable."""
  csv_score = _evaluation_metrics(scores_csv).get("score")
  if threshold_score and csv_score and threshold_score != csv_score:
    raise errors.DataError(
        f"The threshold is for --score={threshold_score} but {scores_csv!r} holds "
        f"--score={csv_score} scores: recalibrate (python -m daml_tf.calibrate "
        f"--score={csv_score}) or give --threshold.")


def evaluate_videos(videos: Sequence[VideoScores], threshold: float, fps: float,
                    min_frames: int, end_ratio: float, cooldown_s: float
                    ) -> Tuple[event_metrics.EventMetrics, List[List[Tuple[int, int]]]]:
  """(the event metrics over all videos, each video's alarms as row intervals [start, end))."""
  alarms = event_metrics.alarm_intervals_per_video(
      [video.scores for video in videos], fps, threshold, min_frames=min_frames,
      end_ratio=end_ratio, cooldown_s=cooldown_s)
  metrics = event_metrics.evaluate_events([video.labels for video in videos], alarms, fps)
  return metrics, alarms


def _video_details(video: VideoScores, alarms: List[Tuple[int, int]], fps: float) -> Dict:
  """One video's intervals and alarms, in the CSV's frame numbers, and its counts."""
  metrics = event_metrics.evaluate_events([video.labels], [alarms], fps)

  def frames(intervals):
    return [[start + video.first_frame, end + video.first_frame] for start, end in intervals]

  return {"video": video.name, "first_frame": video.first_frame,
          "scored_frames": metrics.num_frames, "normal_frames": metrics.normal_frames,
          "anomalous_intervals": frames(event_metrics.runs(video.labels)),
          "alarms": frames(alarms), "num_found": metrics.num_found,
          "num_false_alarms": metrics.num_false_alarms,
          "delays_frames": list(metrics.delays_frames)}


def _sweep(videos: Sequence[VideoScores], threshold: float, fps: float) -> List[Dict]:
  rows = []
  for min_frames, cooldown_s, end_ratio in itertools.product(
      SWEEP_MIN_FRAMES, SWEEP_COOLDOWN_S, SWEEP_END_RATIO):
    metrics, _ = evaluate_videos(videos, threshold, fps, min_frames, end_ratio, cooldown_s)
    rows.append({"min_frames": min_frames, "end_ratio": end_ratio, "cooldown_s": cooldown_s,
                 "num_found": metrics.num_found, "num_intervals": metrics.num_intervals,
                 "event_recall": metrics.event_recall,
                 "num_false_alarms": metrics.num_false_alarms,
                 "false_alarms_per_hour": metrics.false_alarms_per_hour,
                 "mean_delay_s": metrics.mean_delay_s})
  return rows


def evaluate_scores_csv(cfg: EventEvalConfig) -> Dict[str, Any]:
  """Evaluates the alarms of cfg's settings on cfg.scores_csv; writes cfg.output if set.

  Returns:
    {"scores_csv", "settings" (threshold and its source, fps, alarm controls, smoothing),
    "metrics" (event_metrics.EventMetrics.to_dict(): intervals, found, false alarms, normal
    hours, delays, ...), "num_intervals_from_first_scored_frame" (their delay counts from that
    frame, see the module docstring), "videos" (per video: first_frame, intervals and alarms in
    its frame numbers, counts, delays), and with cfg.sweep "sweep" (one row per combination)}.
  """
  videos = read_scores_csv(cfg.scores_csv)
  settings = resolve_threshold(cfg)
  smoothing = smoothing_lib.parse(cfg.smoothing)
  if smoothing.kind != "none":
    if _evaluation_metrics(cfg.scores_csv).get("smoothing", "none") != "none":
      logging.warning("%s holds scores evaluate already smoothed; --smoothing=%s smooths them "
                      "again.", cfg.scores_csv, cfg.smoothing)
    videos = [dataclasses.replace(video, scores=smoothing_lib.smooth(video.scores, smoothing))
              for video in videos]
  settings.update(fps=cfg.fps, min_frames=cfg.min_frames, end_ratio=cfg.end_ratio,
                  cooldown_s=cfg.cooldown_s, smoothing=str(smoothing))
  threshold = settings["threshold"]
  metrics, alarms = evaluate_videos(videos, threshold, cfg.fps, cfg.min_frames, cfg.end_ratio,
                                    cfg.cooldown_s)
  result = {
      "scores_csv": cfg.scores_csv, "settings": settings, "metrics": metrics.to_dict(),
      "num_intervals_from_first_scored_frame": int(sum(video.labels[0] for video in videos)),
      "videos": [_video_details(video, video_alarms, cfg.fps)
                 for video, video_alarms in zip(videos, alarms)],
  }
  if cfg.sweep:
    result["sweep"] = _sweep(videos, threshold, cfg.fps)
  if cfg.output:
    if os.path.dirname(cfg.output):
      fileio.makedirs(os.path.dirname(cfg.output))
    with fileio.GFile(cfg.output, "w") as f:
      f.write(json.dumps(result, indent=2) + "\n")
    logging.info("Wrote %s", cfg.output)
  return result


def _number(value: Optional[float]) -> str:
  return "none" if value is None else f"{value:.4g}"


def summary_line(metrics: Dict[str, Any]) -> str:
  """`event_recall=... false_alarms_per_hour=... mean_delay_s=...` ("none" where undefined)."""
  return (f"event_recall={_number(metrics['event_recall'])} "
          f"false_alarms_per_hour={_number(metrics['false_alarms_per_hour'])} "
          f"mean_delay_s={_number(metrics['mean_delay_s'])}")


def sweep_table(rows: Sequence[Dict[str, Any]]) -> str:
  """The sweep as an aligned text table, one row per combination."""
  lines = [f"{'min_frames':>10} {'end_ratio':>9} {'cooldown_s':>10} {'found':>7} "
           f"{'recall':>7} {'false':>5} {'false/h':>8} {'delay_s':>7}"]
  for row in rows:
    lines.append(
        f"{row['min_frames']:>10} {row['end_ratio']:>9g} {row['cooldown_s']:>10g} "
        f"{row['num_found']:>3}/{row['num_intervals']:<3} {_number(row['event_recall']):>7} "
        f"{row['num_false_alarms']:>5} {_number(row['false_alarms_per_hour']):>8} "
        f"{_number(row['mean_delay_s']):>7}")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  cfg = cli.exit_on_expected_errors(config_from_flags, FLAGS)
  result = cli.exit_on_expected_errors(evaluate_scores_csv, cfg)
  metrics = result["metrics"]
  # The rate rests on few hours on a benchmark (Ped2: under a minute of normal frames): the
  # counts behind it say how much it can be trusted.
  logging.info("%d of %d anomalous intervals found; %d false alarms of %d alarms in %.4g h "
               "(%d frames) of normal footage; threshold %.6g", metrics["num_found"],
               metrics["num_intervals"], metrics["num_false_alarms"], metrics["num_alarms"],
               metrics["normal_hours"], metrics["normal_frames"],
               result["settings"]["threshold"])
  print(summary_line(metrics), flush=True)
  if cfg.sweep:
    print(sweep_table(result["sweep"]), flush=True)
  cli.finish()


if __name__ == "__main__":
  define_flags()
  app.run(main)
