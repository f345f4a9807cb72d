"""Event-level evaluation of alarms on frame-labelled video: what an operator sees.

Frame AUCs say how well scores rank frames; an operator sees alarms. For each video, the
anomalous intervals are the maximal runs of frames labelled 1 and the alarms are intervals of
frames (from AlarmController, see `alarm_intervals`, or any per-frame flags). Then:

- event recall: the fraction of anomalous intervals that some alarm overlaps;
- false alarms: alarms that overlap no anomalous interval, also per hour of normal footage
  (frames labelled 0, over fps);
- delay: for each found interval, from its first frame to the first alarm frame inside it (an
  alarm already on when the interval starts: 0), in frames and seconds; mean and median.

Intervals are half-open frame ranges [start, end). An alarm interval runs from its start frame
(when it is raised, after the debounce) to its last frame at or above the end level.
"""

import dataclasses
import math
import random
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from daml_tf.service import alarms as alarms_lib

Interval = Tuple[int, int]
FlagsOrIntervals = Union[np.ndarray, Sequence[Interval]]


def runs(flags) -> List[Interval]:
  """The maximal runs of true (non-zero) values, as [start, end) frame intervals."""
  flags = np.asarray(flags).astype(bool).ravel()
  if not flags.size:
    return []
  padded = np.concatenate([[False], flags, [False]])
  edges = np.flatnonzero(padded[1:] != padded[:-1])
  return [(int(start), int(end)) for start, end in zip(edges[0::2], edges[1::2])]


def _alarm_intervals_of(alarms: FlagsOrIntervals, num_frames: int, video: int) -> List[Interval]:
  """Alarm intervals from per-frame flags ([num_frames]) or a list of (start, end)."""
  array = np.asarray(alarms)
  if array.size == 0:
    return []
  if array.ndim == 2 and array.shape[1] == 2:
    intervals = [(int(start), int(end)) for start, end in array]
    for start, end in intervals:
      if not 0 <= start < end <= num_frames:
        raise ValueError(f"video {video}: alarm interval [{start}, {end}) is not within its "
                         f"{num_frames} frames")
    return sorted(intervals)
  if array.ndim != 1 or array.shape[0] != num_frames:
    raise ValueError(f"video {video}: expected {num_frames} per-frame alarm flags or a list of "
                     f"(start, end) intervals, got shape {array.shape}")
  return runs(array)


@dataclasses.dataclass(frozen=True)
class EventMetrics:
  """Event-level results over a set of videos (None where undefined).

  Attributes:
    num_videos, num_frames: what was evaluated.
    num_intervals: anomalous intervals (runs of frames labelled 1).
    num_found: those overlapped by an alarm.
    event_recall: num_found / num_intervals (None without intervals).
    num_alarms: alarm intervals.
    num_false_alarms: alarms overlapping no anomalous interval.
    alarm_precision: (num_alarms - num_false_alarms) / num_alarms (None without alarms).
    normal_frames: frames labelled 0.
    normal_hours: normal_frames / fps / 3600.
    false_alarms_per_hour: num_false_alarms / normal_hours (None without normal frames).
    mean_delay_frames, median_delay_frames, mean_delay_s, median_delay_s: the delays of the
      found intervals (None when none was found).
    delays_frames: each found interval's delay, in video order.
  """

  num_videos: int
  num_frames: int
  num_intervals: int
  num_found: int
  event_recall: Optional[float]
  num_alarms: int
  num_false_alarms: int
  alarm_precision: Optional[float]
  normal_frames: int
  normal_hours: float
  false_alarms_per_hour: Optional[float]
  mean_delay_frames: Optional[float]
  median_delay_frames: Optional[float]
  mean_delay_s: Optional[float]
  median_delay_s: Optional[float]
  delays_frames: Tuple[int, ...] = ()

  def to_dict(self) -> Dict[str, Any]:
    """A JSON-serialisable dict (delays_frames as a list)."""
    result = dataclasses.asdict(self)
    result["delays_frames"] = list(self.delays_frames)
    return result


def _fps_list(fps, num_videos: int) -> List[float]:
  values = [float(fps)] * num_videos if np.ndim(fps) == 0 else [float(value) for value in fps]
  if len(values) != num_videos:
    raise ValueError(f"fps gives {len(values)} rates for {num_videos} videos")
  if any(not value > 0 for value in values):
    raise ValueError(f"fps must be > 0, got {fps}")
  return values


def evaluate_events(labels_per_video: Sequence, alarms_per_video: Sequence[FlagsOrIntervals],
                    fps) -> EventMetrics:
  """Event recall, false alarms (per hour of normal footage) and delays.

  Args:
    labels_per_video: per video, [num_frames] frame labels (1 anomalous, 0 normal).
    alarms_per_video: per video, [num_frames] per-frame alarm flags, or a list of [start, end)
      alarm intervals (alarm_intervals).
    fps: frames per second, one for all videos or one per video.
  """
  if len(labels_per_video) != len(alarms_per_video):
    raise ValueError(f"{len(labels_per_video)} label arrays for {len(alarms_per_video)} "
                     "alarm arrays")
  rates = _fps_list(fps, len(labels_per_video))
  num_frames = num_intervals = num_found = num_alarms = num_false = normal_frames = 0
  normal_seconds = 0.0
  delays: List[int] = []
  delays_s: List[float] = []
  for video, (labels, alarms, rate) in enumerate(zip(labels_per_video, alarms_per_video, rates)):
    labels = np.asarray(labels).astype(bool).ravel()
    intervals = runs(labels)
    alarm_list = _alarm_intervals_of(alarms, labels.size, video)
    num_frames += labels.size
    normal = int(labels.size - labels.sum())
    normal_frames += normal
    normal_seconds += normal / rate
    num_intervals += len(intervals)
    num_alarms += len(alarm_list)
    for start, end in intervals:
      overlapping = [max(a_start, start) for a_start, a_end in alarm_list
                     if a_start < end and a_end > start]
      if overlapping:
        num_found += 1
        delays.append(min(overlapping) - start)
        delays_s.append(delays[-1] / rate)
    num_false += sum(1 for a_start, a_end in alarm_list
                     if not any(a_start < end and a_end > start for start, end in intervals))
  normal_hours = normal_seconds / 3600.0
  return EventMetrics(
      num_videos=len(labels_per_video), num_frames=num_frames, num_intervals=num_intervals,
      num_found=num_found,
      event_recall=num_found / num_intervals if num_intervals else None,
      num_alarms=num_alarms, num_false_alarms=num_false,
      alarm_precision=(num_alarms - num_false) / num_alarms if num_alarms else None,
      normal_frames=normal_frames, normal_hours=normal_hours,
      false_alarms_per_hour=num_false / normal_hours if normal_hours > 0 else None,
      mean_delay_frames=float(np.mean(delays)) if delays else None,
      median_delay_frames=float(np.median(delays)) if delays else None,
      mean_delay_s=float(np.mean(delays_s)) if delays_s else None,
      median_delay_s=float(np.median(delays_s)) if delays_s else None,
      delays_frames=tuple(int(delay) for delay in delays))


def alarm_intervals(scores, fps: float, threshold: float, alarm=None,
                    scene_changes=None, seed: int = 0, **settings) -> List[Interval]:
  """The alarms AlarmController raises on one video's per-frame scores, as frame intervals.

  Frame i is at i / fps seconds. An alarm's interval is [its start frame, its last frame at or
  above the end level + 1); alarms merged by the cooldown are one interval.

  Args:
    scores: [num_frames] (smoothed) scores; NaN: not scored.
    fps: the video's frame rate (the cooldown is in seconds).
    threshold: the alarm threshold.
    alarm: a config.AlarmConfig, or None for AlarmController's defaults; `settings`
      (min_frames, end_ratio, cooldown_s) override it.
    scene_changes: [num_frames] flags of the frames where the view changed, or None.
    seed: the seed of the alarm ids' randomness (they do not change the intervals).
  """
  if alarm is not None:
    settings = {"min_frames": alarm.min_frames, "end_ratio": alarm.end_ratio,
                "cooldown_s": alarm.cooldown_s, **settings}
  controller = alarms_lib.AlarmController(threshold, rng=random.Random(seed), **settings)
  scores = np.asarray(scores, dtype=np.float64).ravel()
  changes = (np.zeros(scores.size, dtype=bool) if scene_changes is None
             else np.asarray(scene_changes).astype(bool).ravel())
  if changes.size != scores.size:
    raise ValueError(f"{changes.size} scene-change flags for {scores.size} scores")
  intervals = []

  def collect(events):
    for event in events:
      if event["event_type"] == alarms_lib.ALARM_END:
        intervals.append((event["start_frame_index"], event["end_frame_index"] + 1))

  for index, score in enumerate(scores):
    collect(controller.update(index / fps, None if math.isnan(score) else float(score),
                              scene_changed=bool(changes[index]), frame_index=index))
  collect(controller.close())
  return intervals


def alarm_intervals_per_video(scores_per_video: Sequence, fps, threshold: float, alarm=None,
                              scene_changes_per_video: Optional[Sequence] = None,
                              **settings) -> List[List[Interval]]:
  """alarm_intervals of each video (fps one for all or one per video), for evaluate_events."""
  rates = _fps_list(fps, len(scores_per_video))
  changes = scene_changes_per_video or [None] * len(scores_per_video)
  return [alarm_intervals(scores, rate, threshold, alarm, scene_changes=change, **settings)
          for scores, rate, change in zip(scores_per_video, rates, changes)]
