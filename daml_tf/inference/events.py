"""Alarm events of a camera, one JSON line each, written as they happen (`events.jsonl`).

An event is the start or the end of an alarm (a run of consecutive frames whose smoothed score
is above the threshold). Each line is flushed when written, so a process tailing the file (or
a crash) sees every event up to the current frame.
"""

import datetime
import json
from typing import Callable, Optional, Tuple

import tensorflow as tf

from daml_tf.inference import localize
from daml_tf.inference.streaming import FrameResult

EVENTS_FILE = "events.jsonl"
ALARM_START = "alarm_start"
ALARM_END = "alarm_end"


def utc_now_iso() -> str:
  """The wall-clock time as ISO 8601 UTC with milliseconds, e.g. 2026-12-01T17:05:03.123Z."""
  now = datetime.datetime.now(datetime.timezone.utc)
  return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class AlarmEventWriter:
  """Turns the detector's per-frame results into alarm_start / alarm_end lines.

  A line: {"camera", "event", "frame", "timestamp_s", "time", "score", "peak_score", "box"}.
  `score` is the smoothed score of the frame of the event; `peak_score` the highest smoothed
  score of the alarm so far (on alarm_start, the start frame's); `box` (x0, y0, x1, y1 in frame
  pixels, x1 and y1 exclusive, or null) is the anomaly box (localize.anomaly_box) of the frame
  with the highest smoothed score of the alarm so far. alarm_end is written at the first frame
  that is no longer in alarm, or by `close` at the last frame when the input ends during an
  alarm.

  Args:
    path: the .jsonl file (created, or truncated).
    camera: the camera name written in every line.
    clock: the wall clock (tests pass a fixed one).
  """

  def __init__(self, path: str, camera: str, clock: Callable[[], str] = utc_now_iso):
    self.path = path
    self.camera = camera
    self._clock = clock
    self._file = tf.io.gfile.GFile(path, "w")
    # GFile creates the file on its first write: a run without alarms still leaves an empty file.
    self._file.write("")
    self._file.flush()
    self._open = False
    self._peak: Optional[float] = None
    self._box: Optional[localize.Box] = None
    self._last: Optional[Tuple[int, float, Optional[float]]] = None
    self.events = 0

  @property
  def in_alarm(self) -> bool:
    return self._open

  def _write(self, event: str, index: int, timestamp: float, score: Optional[float]) -> None:
    line = {"camera": self.camera, "event": event, "frame": int(index),
            "timestamp_s": round(float(timestamp), 6), "time": self._clock(),
            "score": None if score is None else float(score),
            "peak_score": self._peak, "box": None if self._box is None else list(self._box)}
    self._file.write(json.dumps(line) + "\n")
    self._file.flush()
    self.events += 1

  def update(self, result: FrameResult, timestamp: float, frame_size: Tuple[int, int]) -> None:
    """Takes the result of the next frame; writes an event when an alarm starts or ends.

    Args:
      result: the detector's result.
      timestamp: the frame's stream time in seconds.
      frame_size: (H, W) of the frame as read (the box is in its pixels).
    """
    self._last = (result.index, timestamp, result.smoothed)
    if result.alarm:
      if not self._open or result.smoothed > self._peak:
        self._peak = float(result.smoothed)
        # Only on a new peak: one connected-component pass per alarm frame at most.
        self._box = (None if result.error_map is None
                     else localize.anomaly_box(result.error_map, frame_size))
      if not self._open:
        self._open = True
        self._write(ALARM_START, result.index, timestamp, result.smoothed)
    elif self._open:
      self._write(ALARM_END, result.index, timestamp, result.smoothed)
      self._open = False
      self._peak = self._box = None

  def close(self) -> None:
    """Ends an alarm still open at the last frame seen, and closes the file."""
    if self._open and self._last is not None:
      self._write(ALARM_END, *self._last)
      self._open = False
    self._file.close()
