"""Alarm decisions of a camera: a state machine from frame scores to alarm events.

AlarmController takes one frame at a time, (timestamp_s, score or None, scene_changed), and
returns the events the frame causes:

- debounce: an alarm starts at the min_frames-th consecutive scored frame above the threshold
  (its start_time is that frame's; first_above_time the first of the run's);
- hysteresis: an open alarm ends at the first scored frame below the end level
  (end_ratio * threshold); frames between the end level and the threshold keep it open;
- cooldown: an ended alarm is held pending for cooldown_s after its end (its last frame at or
  above the end level); one that would start within that time continues the pending alarm
  instead (same id), and alarm_end is emitted only once the cooldown has passed, so a consumer
  never sees an end that is taken back;
- scene change: a frame with scene_changed emits scene_change, ends an open or pending alarm at
  once, and neither it nor the min_frames frames after it count toward a start (the model's
  errors right after the view changed say nothing about the new view);
- gap(): frames were lost (a reconnect, a clock jump): an open or pending alarm ends, and the
  debounce run starts again;
- a frame whose score is None (not scored) changes nothing but the clock: it neither continues
  nor ends an alarm, nor breaks the debounce run.

Each alarm tracks its peak score; alarm_update is emitted when the peak grows (so a snapshot
can be replaced). Ids are Frigate's form, `<start_time:.6f>-<6 of [a-z0-9]>`.

Nothing here reads a clock: all times are the frames' timestamps, so a test or an offline
evaluation (event_metrics) runs it on any timeline.
"""

import dataclasses
import random
import string
from typing import Any, Dict, List, Optional

import numpy as np

ALARM_START = "alarm_start"
ALARM_UPDATE = "alarm_update"
ALARM_END = "alarm_end"
SCENE_CHANGE = "scene_change"
# Why an alarm ended (the end_reason of alarm_end).
END_SCORE = "score"
END_SCENE_CHANGE = "scene_change"
END_GAP = "gap"
END_CLOSE = "close"
_ID_CHARACTERS = string.ascii_lowercase + string.digits

Event = Dict[str, Any]


@dataclasses.dataclass
class _Alarm:
  """An alarm, open or pending."""

  id: str
  start_time: float
  start_frame_index: int
  first_above_time: float
  first_above_frame_index: int
  peak_score: float
  peak_time: float
  peak_frame_index: int
  # The last frame at or above the end level: the end, once it ends.
  last_time: float
  last_frame_index: int
  end_reason: Optional[str] = None


def alarm_id(start_time: float, rng: random.Random) -> str:
  """Frigate's event id: the start timestamp with 6 decimals, '-', 6 random [a-z0-9]."""
  return f"{start_time:.6f}-{''.join(rng.choices(_ID_CHARACTERS, k=6))}"


class AlarmController:
  """The alarm state machine of one camera (see the module docstring for the rules).

  Args:
    threshold: a frame's score above this is above threshold.
    min_frames: debounce: consecutive frames above the threshold that start an alarm (>= 1).
    end_ratio: hysteresis (0 < end_ratio <= 1): the end level is end_ratio * threshold (for a
      negative threshold, as far below it: threshold - (1 - end_ratio) * |threshold|).
    cooldown_s: alarms closer than this (end to start) merge; 0: every end is emitted at once.
    rng: the source of the ids' random part (a seeded one makes them reproducible).

  Every event is a dict with the keys event_type, id, time and frame_index (the frame that
  caused it), score (that frame's, or None), start_time, start_frame_index, first_above_time,
  first_above_frame_index, end_time, end_frame_index, end_reason, peak_score, peak_time and
  peak_frame_index; the alarm's keys are None in a scene_change event, end_* are None before
  alarm_end. peak_* may be of a frame before the start (one of the debounce run).
  """

  def __init__(self, threshold: float, min_frames: int = 3, end_ratio: float = 0.8,
               cooldown_s: float = 5.0, rng: Optional[random.Random] = None):
    if min_frames < 1 or int(min_frames) != min_frames:
      raise ValueError(f"min_frames must be a whole number >= 1, got {min_frames}")
    if not 0 < end_ratio <= 1:
      raise ValueError(f"end_ratio must be in (0, 1], got {end_ratio}")
    if cooldown_s < 0:
      raise ValueError(f"cooldown_s must be >= 0, got {cooldown_s}")
    self.threshold = float(threshold)
    self.min_frames = int(min_frames)
    self.end_ratio = float(end_ratio)
    self.cooldown_s = float(cooldown_s)
    self.end_level = self.threshold - (1.0 - self.end_ratio) * abs(self.threshold)
    self._rng = rng if rng is not None else random.Random()
    self._open: Optional[_Alarm] = None
    self._pending: Optional[_Alarm] = None
    self._run: List[tuple] = []  # (time, frame_index, score) of the debounce run
    self._suppressed = 0
    self._frame_index = -1
    self._time: Optional[float] = None
    self._score: Optional[float] = None

  @classmethod
  def from_config(cls, threshold: float, alarm, rng: Optional[random.Random] = None):
    """A controller with the settings of a config.AlarmConfig."""
    return cls(threshold, min_frames=alarm.min_frames, end_ratio=alarm.end_ratio,
               cooldown_s=alarm.cooldown_s, rng=rng)

  @property
  def open_alarm_id(self) -> Optional[str]:
    """The id of the open alarm, or None."""
    return self._open.id if self._open else None

  def active_ids(self) -> set:
    """Ids of the alarms not yet ended for a consumer (open, or pending in cooldown): their
    files must not be deleted."""
    return {alarm.id for alarm in (self._open, self._pending) if alarm is not None}

  # Events.

  def _event(self, event_type: str, alarm: Optional[_Alarm]) -> Event:
    event: Event = {
        "event_type": event_type, "id": None, "time": self._time,
        "frame_index": self._frame_index, "score": self._score,
        "start_time": None, "start_frame_index": None, "first_above_time": None,
        "first_above_frame_index": None, "end_time": None, "end_frame_index": None,
        "end_reason": None, "peak_score": None, "peak_time": None, "peak_frame_index": None,
    }
    if alarm is not None:
      event.update(
          id=alarm.id, start_time=alarm.start_time, start_frame_index=alarm.start_frame_index,
          first_above_time=alarm.first_above_time,
          first_above_frame_index=alarm.first_above_frame_index, peak_score=alarm.peak_score,
          peak_time=alarm.peak_time, peak_frame_index=alarm.peak_frame_index)
      if event_type == ALARM_END:
        event.update(end_time=alarm.last_time, end_frame_index=alarm.last_frame_index,
                     end_reason=alarm.end_reason)
    return event

  def _end_pending(self, events: List[Event]) -> None:
    if self._pending is not None:
      events.append(self._event(ALARM_END, self._pending))
      self._pending = None

  def _end_open(self, reason: str, events: List[Event]) -> None:
    """Ends the open alarm: pending for the cooldown, or emitted at once."""
    if self._open is None:
      return
    alarm, self._open = self._open, None
    alarm.end_reason = reason
    if reason == END_SCORE and self.cooldown_s > 0:
      self._pending = alarm
    else:
      events.append(self._event(ALARM_END, alarm))

  def _start(self, events: List[Event]) -> None:
    """Starts an alarm (or continues the pending one) at the current frame, the last of the
    debounce run."""
    first_time, first_index, _ = self._run[0]
    peak_time, peak_index, peak = max(self._run, key=lambda item: item[2])
    if self._pending is not None:
      # Within the cooldown (an expired one was emitted before this frame was looked at).
      alarm, self._pending = self._pending, None
      alarm.end_reason = None
      alarm.last_time, alarm.last_frame_index = self._time, self._frame_index
      self._open = alarm
      if peak > alarm.peak_score:
        alarm.peak_score, alarm.peak_time, alarm.peak_frame_index = peak, peak_time, peak_index
        events.append(self._event(ALARM_UPDATE, alarm))
    else:
      self._open = _Alarm(
          id=alarm_id(self._time, self._rng), start_time=self._time,
          start_frame_index=self._frame_index, first_above_time=first_time,
          first_above_frame_index=first_index, peak_score=peak, peak_time=peak_time,
          peak_frame_index=peak_index, last_time=self._time, last_frame_index=self._frame_index)
      events.append(self._event(ALARM_START, self._open))
    self._run = []

  # The frame loop.

  def update(self, timestamp_s: float, score: Optional[float], scene_changed: bool = False,
             frame_index: Optional[int] = None) -> List[Event]:
    """The events of one frame, in order (possibly none).

    Args:
      timestamp_s: the frame's time (non-decreasing from frame to frame).
      score: its (smoothed) score, or None when it was not scored; NaN counts as None.
      scene_changed: the view changed at this frame (is_scene_change).
      frame_index: the frame's index (default: one more than the last frame's, from 0).
    """
    self._frame_index = self._frame_index + 1 if frame_index is None else int(frame_index)
    self._time = float(timestamp_s)
    if score is not None and not np.isfinite(score):
      score = None
    self._score = None if score is None else float(score)
    events: List[Event] = []
    if (self._pending is not None
        and self._time - self._pending.last_time > self.cooldown_s):
      self._end_pending(events)
    if scene_changed:
      self._end_pending(events)
      self._end_open(END_SCENE_CHANGE, events)
      events.append(self._event(SCENE_CHANGE, None))
      self._run = []
      self._suppressed = self.min_frames
      return events
    if self._suppressed > 0:
      self._suppressed -= 1
      return events
    if self._score is None:
      return events
    score = self._score
    if self._open is not None:
      alarm = self._open
      if score < self.end_level:
        self._end_open(END_SCORE, events)
      else:
        alarm.last_time, alarm.last_frame_index = self._time, self._frame_index
        if score > alarm.peak_score:
          alarm.peak_score, alarm.peak_time = score, self._time
          alarm.peak_frame_index = self._frame_index
          events.append(self._event(ALARM_UPDATE, alarm))
      return events
    if score > self.threshold:
      self._run.append((self._time, self._frame_index, score))
      if len(self._run) >= self.min_frames:
        self._start(events)
    else:
      self._run = []
    return events

  def gap(self) -> List[Event]:
    """Frames were lost: ends the open or pending alarm (alarm_end with end_reason "gap" for an
    open one; a pending one keeps its reason) and restarts the debounce."""
    events: List[Event] = []
    self._end_pending(events)
    self._end_open(END_GAP, events)
    self._run = []
    return events

  def close(self) -> List[Event]:
    """The input ended: emits the end of the open or pending alarm."""
    events: List[Event] = []
    self._end_pending(events)
    self._end_open(END_CLOSE, events)
    self._run = []
    return events


def is_scene_change(previous: np.ndarray, current: np.ndarray, *, delta: float,
                    fraction: float) -> bool:
  """Whether at least `fraction` of the pixels changed by more than `delta` between two frames.

  Args:
    previous, current: frames of one shape, uint8 (0-255) or float (0-1); colour channels are
      averaged first.
    delta: the change of a pixel's intensity (0-1) that counts it as changed
      (AlarmConfig.scene_change_delta).
    fraction: the fraction of changed pixels that makes a scene change
      (AlarmConfig.scene_change_fraction).
  """
  previous, current = np.asarray(previous), np.asarray(current)
  if previous.shape != current.shape:
    # A new resolution is a new view.
    return True

  def intensity(frame: np.ndarray) -> np.ndarray:
    values = frame.astype(np.float32)
    if frame.dtype == np.uint8:
      values /= 255.0
    return values.mean(axis=-1) if values.ndim == 3 else values

  changed = np.abs(intensity(current) - intensity(previous)) > delta
  return bool(changed.mean() >= fraction) if changed.size else False
