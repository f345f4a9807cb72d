"""The service's events as the API shows them, read from each camera's events.jsonl.

No second store: the lines the runner writes (one at an alarm's start, one at its end, both
with the alarm's id) are merged by id into one event in Frigate's shape. `detect --http` reads
detect's lines, which have no id (nor snapshot or clip): an alarm_end closes the alarm_start
before it, and the id is made from the start's time and frame in the same pattern. Each file is
read incrementally (from where the last read stopped), so a request costs only the new lines.

Event ids come from URLs: `resolve_file` accepts only an id of the service's own pattern that
names an event folder of a configured camera, and a path that resolves inside the output
folder; anything else is None (a 404), before any file is opened.
"""

import datetime
import json
import os
import re
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

from daml_tf.inference import events as events_lib
from daml_tf.service import alarms as alarms_lib
from daml_tf.service import recorder as recorder_lib

# alarms.alarm_id's ids: the start time with 6 decimals, '-', 6 of [a-z0-9] (Frigate's).
EVENT_ID = re.compile(r"\d{1,12}\.\d{6}-[a-z0-9]{6}")
LABEL = "anomaly"
# What an event's files are called in the API: the recorder's file names.
FILES = {"snapshot.jpg": recorder_lib.SNAPSHOT_FILE, "clip.mp4": recorder_lib.CLIP_FILE}


class _CameraLog:
  """One camera's events.jsonl, read from where the last read stopped."""

  def __init__(self, path: str):
    self.path = path
    self.offset = 0
    self.events: Dict[str, Dict[str, Any]] = {}
    self._open_id: Optional[str] = None  # detect's lines: the alarm_start not yet ended.

  def refresh(self) -> None:
    try:
      size = os.path.getsize(self.path)
    except OSError:
      return
    if size < self.offset:  # Replaced (a new run in the same folder): read it again.
      self.offset, self.events, self._open_id = 0, {}, None
    if size == self.offset:
      return
    with open(self.path, "rb") as file:
      file.seek(self.offset)
      data = file.read(size - self.offset)
    # A line still being written has no newline yet: it is read next time.
    end = data.rfind(b"\n") + 1
    self.offset += end
    for line in data[:end].splitlines():
      try:
        record = json.loads(line)
      except ValueError:
        continue
      self._merge(record)

  def _merge(self, record: Dict[str, Any]) -> None:
    if "event_type" not in record:
      record = self._from_detect(record)
      if record is None:
        return
    event_type = record.get("event_type")
    event_id = record.get("id")
    if event_type not in (alarms_lib.ALARM_START, alarms_lib.ALARM_END) or not event_id:
      return
    event = self.events.setdefault(event_id, {
        "id": event_id, "camera": record.get("camera"), "label": LABEL,
        "start_time": record.get("start_time"), "end_time": None, "score": record.get("score"),
        "top_score": record.get("score"), "threshold": record.get("threshold"),
        "box": record.get("box"), "end_reason": None})
    if event_type == alarms_lib.ALARM_END:
      event["end_time"] = record.get("end_time")
      event["end_reason"] = record.get("end_reason")
      if record.get("peak_score") is not None:
        event["top_score"] = record["peak_score"]
      if record.get("box") is not None:
        event["box"] = record["box"]

  def _from_detect(self, record: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """A line of detect (events.AlarmEventWriter) as the service writes it, or None."""
    event_type = record.get("event")
    try:
      epoch = datetime.datetime.fromisoformat(
          str(record.get("time")).replace("Z", "+00:00")).timestamp()
    except ValueError:
      return None
    if event_type == alarms_lib.ALARM_START:
      self._open_id = _detect_id(epoch, int(record.get("frame") or 0))
      return dict(record, event_type=event_type, id=self._open_id, start_time=epoch)
    if event_type == alarms_lib.ALARM_END and self._open_id is not None:
      event_id, self._open_id = self._open_id, None
      return dict(record, event_type=event_type, id=event_id, end_time=epoch)
    return None


def _detect_id(epoch: float, frame: int) -> str:
  """An id in EVENT_ID's pattern for a detect alarm: its start time and frame (base 36)."""
  digits, frame = "", frame % 36 ** 6
  for _ in range(6):
    frame, digit = divmod(frame, 36)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
  return f"{epoch:.6f}-{digits}"


class EventStore:
  """Every camera's events, Frigate-shaped.

  Args:
    output_dir: record.output_dir (no file outside it is ever served).
    cameras: the configured camera names (the only folders ever opened).
    folders: each camera's folder, when not <output_dir>/<camera> (detect with one input
      writes in output_dir itself).
  """

  def __init__(self, output_dir: str, cameras: Sequence[str],
               folders: Optional[Dict[str, str]] = None):
    self.root = os.path.realpath(output_dir)
    self.cameras = tuple(cameras)
    self._folders = {name: os.path.realpath((folders or {}).get(name)
                                            or os.path.join(self.root, name))
                     for name in self.cameras}
    self._logs = {name: _CameraLog(os.path.join(folder, events_lib.EVENTS_FILE))
                  for name, folder in self._folders.items()}
    self._lock = threading.Lock()

  def _folder(self, camera: str, event_id: str) -> str:
    return os.path.join(self._folders[camera], recorder_lib.EVENTS_DIR, event_id)

  def _shaped(self, event: Dict[str, Any]) -> Dict[str, Any]:
    folder = self._folder(event["camera"], event["id"])
    has_snapshot = os.path.isfile(os.path.join(folder, recorder_lib.SNAPSHOT_FILE))
    has_clip = os.path.isfile(os.path.join(folder, recorder_lib.CLIP_FILE))
    shaped = dict(event, has_snapshot=has_snapshot, has_clip=has_clip,
                  data={"box": event["box"], "score": event["score"],
                        "top_score": event["top_score"], "type": "anomaly"})
    base = f"/api/events/{event['id']}"
    shaped["snapshot_url"] = f"{base}/snapshot.jpg" if has_snapshot else None
    shaped["clip_url"] = f"{base}/clip.mp4" if has_clip else None
    return shaped

  def _all(self) -> List[Dict[str, Any]]:
    with self._lock:
      events = []
      for name, log in self._logs.items():
        log.refresh()
        events.extend(dict(event, camera=name) for event in log.events.values())
    return events

  def list(self, camera: Optional[str] = None, after: Optional[float] = None,
           before: Optional[float] = None, limit: int = 100) -> List[Dict[str, Any]]:
    """Newest first; after/before compare with start_time (Frigate's filters)."""
    events = [e for e in self._all()
              if (camera is None or e["camera"] == camera)
              and (after is None or (e["start_time"] or 0) > after)
              and (before is None or (e["start_time"] or 0) < before)]
    events.sort(key=lambda e: e["start_time"] or 0, reverse=True)
    return [self._shaped(e) for e in events[:limit]]

  def get(self, event_id: str) -> Optional[Dict[str, Any]]:
    """The event, or None for an id that is malformed or unknown."""
    if not EVENT_ID.fullmatch(event_id):
      return None
    for event in self._all():
      if event["id"] == event_id:
        return self._shaped(event)
    return None

  def resolve_file(self, event_id: str, name: str) -> Optional[Tuple[str, str]]:
    """(path, media type) of an event's snapshot.jpg or clip.mp4 when it exists, else None."""
    if name not in FILES or self.get(event_id) is None:
      return None
    event = self.get(event_id)
    path = os.path.realpath(os.path.join(self._folder(event["camera"], event_id), FILES[name]))
    # The id's pattern already excludes separators and dots; this is the second lock.
    if os.path.commonpath([path, self.root]) != self.root or not os.path.isfile(path):
      return None
    return path, "image/jpeg" if name.endswith(".jpg") else "video/mp4"
