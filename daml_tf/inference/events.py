"""Alarm events of a camera, as they happen, handed to event sinks (`events.jsonl`, MQTT, ...).

An event is the start or the end of an alarm (a run of consecutive frames whose smoothed score
is above the threshold). AlarmEventWriter turns frame results into event records (dicts) and
hands each record to every sink: the `events.jsonl` file (JsonlSink, always) and any other
sink given to it (for example mqtt.MqttSink). A sink is anything with `emit(record)` and
`close()`; all sinks receive the same record, serialized by `encode`, so a file line and an
MQTT payload of one event are the same bytes.

Each line of the file is flushed when written, so a process tailing it (or a crash) sees every
event up to the current frame.
"""

import datetime
import json
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple


from daml_tf import fileio
from daml_tf import localize
from daml_tf.inference.streaming import FrameResult

EVENTS_FILE = "events.jsonl"
ALARM_START = "alarm_start"
ALARM_END = "alarm_end"


def utc_now_iso() -> str:
  """The wall-clock time as ISO 8601 UTC with milliseconds, e.g. 2026-12-01T17:05:03.123Z."""
  now = datetime.datetime.now(datetime.timezone.utc)
  return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


Record = Dict[str, Any]


def encode(record: Record) -> str:
  """The one JSON form of an event record, shared by every sink (no newline)."""
  return json.dumps(record)


class EventSink(Protocol):
  """Where event records go. `emit` is called in the frame loop: it must return quickly."""

  def emit(self, record: Record) -> None:
    ...

  def close(self) -> None:
    ...


class JsonlSink:
  """Records as lines of a .jsonl file, each flushed when written.

  Args:
    path: the file (created, or truncated, at once: a run without alarms still leaves an
      empty file).
  """

  def __init__(self, path: str):
    self.path = path
    self._file = fileio.GFile(path, "w")
    # GFile creates the file on its first write.
    self._file.write("")
    self._file.flush()

  def emit(self, record: Record) -> None:
    self._file.write(encode(record) + "\n")
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class AlarmEventWriter:
  """Turns the detector's per-frame results into alarm_start / alarm_end lines.

  A line: {"camera", "event", "frame", "timestamp_s", "time", "score", "peak_score", "box"}.
  `score` is the smoothed score of the frame of the event; `peak_score` the highest smoothed
  score of the alarm so far (on alarm_start, the start frame's); `box` (x0, y0, x1, y1 in frame
  pixels, x1 and y1 exclusive, or null) is the anomaly box (localize.anomaly_box) of the frame
  with the highest smoothed score of the alarm so far. alarm_end is written at the first frame
  that is no longer in alarm, or by `close` at the last frame when the input ends during an
  alarm.

  Every record goes to the .jsonl file at `path` and then to each of `sinks`, in order.

  Args:
    path: the .jsonl file (created, or truncated); closed by `close`.
    camera: the camera name written in every line.
    clock: the wall clock (tests pass a fixed one).
    sinks: more sinks (EventSink). They are not closed here: whoever made them closes them
      (one MQTT connection may serve several cameras' writers).
  """

  def __init__(self, path: str, camera: str, clock: Callable[[], str] = utc_now_iso,
               sinks: Sequence[EventSink] = ()):
    self.path = path
    self.camera = camera
    self._clock = clock
    self._file = JsonlSink(path)
    self._sinks: List[EventSink] = [self._file, *sinks]
    self._open = False
    self._peak: Optional[float] = None
    self._box: Optional[localize.Box] = None
    self._last: Optional[Tuple[int, float, Optional[float]]] = None
    self.events = 0

  @property
  def in_alarm(self) -> bool:
    return self._open

  def _write(self, event: str, index: int, timestamp: float, score: Optional[float]) -> None:
    record = {"camera": self.camera, "event": event, "frame": int(index),
              "timestamp_s": round(float(timestamp), 6), "time": self._clock(),
              "score": None if score is None else float(score),
              "peak_score": self._peak, "box": None if self._box is None else list(self._box)}
    for sink in self._sinks:
      sink.emit(record)
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
    """Ends an alarm still open at the last frame seen (to every sink), and closes the file."""
    if self._open and self._last is not None:
      self._write(ALARM_END, *self._last)
      self._open = False
    self._file.close()
