"""Retention of the files of past alarms: by age, and within a disk budget.

The layout: `<root>/<camera>/events/<id>/` per alarm, holding `snapshot.jpg`,
`snapshot-clean.jpg` and `clip.mp4` (whatever is there is one unit). A file directly in an
`events/` folder is a unit of its own, grouped with the others of the same alarm id when its
name starts with one (`<id>.jpg`, `<id>-clean.jpg`, ...). Nothing outside the `events/` folders
is ever touched.

Retention.sweep deletes the units older than retain_days (by the newest mtime of their files,
so a clip still being written counts as new), then, with a budget, the oldest further until all
units together fit. A protected unit (an open alarm's) is never deleted, even when that leaves
the budget exceeded. Local files only (os, shutil): the service writes its events to local disk.
"""

import dataclasses
import os
import re
import shutil
import time
from typing import Callable, Collection, Dict, List, Optional, Tuple

from absl import logging

EVENTS_DIR = "events"
SNAPSHOT_FILE = "snapshot.jpg"
CLEAN_SNAPSHOT_FILE = "snapshot-clean.jpg"
CLIP_FILE = "clip.mp4"
SECONDS_PER_DAY = 86400.0
# Frigate's event id: start timestamp with 6 decimals, '-', 6 of [a-z0-9] (alarms.alarm_id).
EVENT_ID_PATTERN = re.compile(r"\d+\.\d{6}-[a-z0-9]{6}")


def event_dir(root: str, camera: str, event_id: str) -> str:
  """The folder of an alarm's files."""
  return os.path.join(root, camera, EVENTS_DIR, event_id)


@dataclasses.dataclass(frozen=True)
class EventFiles:
  """One unit of retention: an alarm's folder, or the loose files of one alarm.

  Attributes:
    camera: the camera folder's name.
    event_id: the alarm id (the folder's name, or the id a loose file's name starts with, or
      that file's whole name).
    paths: the folder, or the files.
    mtime: the newest modification time of its files (and of the folder itself).
    size_bytes: the sizes of its files added up.
  """

  camera: str
  event_id: str
  paths: Tuple[str, ...]
  mtime: float
  size_bytes: int


def _folder_stats(path: str):
  """(newest mtime, total size) of a folder's files, the folder itself included in the mtime;
  symbolic links count as themselves, never followed."""
  newest = os.lstat(path).st_mtime
  size = 0
  for folder, _, files in os.walk(path):
    for name in files:
      try:
        stat = os.lstat(os.path.join(folder, name))
      except FileNotFoundError:
        continue  # deleted since the listing
      newest = max(newest, stat.st_mtime)
      size += stat.st_size
  return newest, size


class Retention:
  """Deletes old alarm files under root.

  Args:
    root: the output folder (config.RecordConfig.output_dir), holding one folder per camera.
    retain_days: units older than this are deleted; None: no age limit.
    max_disk_bytes: the budget of all units together; None: none.
    clock: the time now, in seconds since the epoch (compared with files' mtimes).
  """

  def __init__(self, root: str, retain_days: Optional[float],
               max_disk_bytes: Optional[int] = None, clock: Callable[[], float] = time.time):
    if retain_days is not None and retain_days <= 0:
      raise ValueError(f"retain_days must be > 0, got {retain_days}")
    if max_disk_bytes is not None and max_disk_bytes < 0:
      raise ValueError(f"max_disk_bytes must be >= 0, got {max_disk_bytes}")
    self.root = root
    self.retain_days = retain_days
    self.max_disk_bytes = max_disk_bytes
    self.clock = clock

  def scan(self) -> List[EventFiles]:
    """Every unit under root, oldest first."""
    units = []
    try:
      cameras = sorted((entry for entry in os.scandir(self.root)
                        if entry.is_dir(follow_symlinks=False)), key=lambda entry: entry.name)
    except FileNotFoundError:
      return []
    for camera in cameras:
      events = os.path.join(camera.path, EVENTS_DIR)
      if not os.path.isdir(events) or os.path.islink(events):
        continue
      groups: Dict[str, List[str]] = {}
      for entry in sorted(os.scandir(events), key=lambda entry: entry.name):
        try:
          if entry.is_dir(follow_symlinks=False):
            mtime, size = _folder_stats(entry.path)
            units.append(EventFiles(camera.name, entry.name, (entry.path,), mtime, size))
          else:
            match = EVENT_ID_PATTERN.match(entry.name)
            groups.setdefault(match.group(0) if match else entry.name, []).append(entry.path)
        except FileNotFoundError:
          continue
      for event_id, paths in groups.items():
        stats = []
        for path in paths:
          try:
            stats.append(os.lstat(path))
          except FileNotFoundError:
            continue
        if stats:
          units.append(EventFiles(camera.name, event_id, tuple(paths),
                                  max(stat.st_mtime for stat in stats),
                                  sum(stat.st_size for stat in stats)))
    units.sort(key=lambda unit: (unit.mtime, unit.camera, unit.event_id))
    return units

  def usage_bytes(self) -> int:
    """The size of all units."""
    return sum(unit.size_bytes for unit in self.scan())

  @staticmethod
  def _is_protected(unit: EventFiles, ids: Collection[str], paths: Collection[str]) -> bool:
    if unit.event_id in ids:
      return True
    for path in unit.paths:
      path = os.path.abspath(path)
      if any(other == path or other.startswith(path + os.sep) for other in paths):
        return True
    return False

  def _delete(self, unit: EventFiles) -> Tuple[List[str], bool]:
    """(the paths deleted, whether the unit is gone: a path already gone counts as deleted,
    one that cannot be deleted is logged and left)."""
    deleted = []
    gone = True
    for path in unit.paths:
      try:
        if os.path.isdir(path) and not os.path.islink(path):
          shutil.rmtree(path)
        else:
          os.remove(path)
        deleted.append(path)
      except FileNotFoundError:
        continue
      except OSError as error:
        gone = False
        logging.warning("Retention: cannot delete %s: %s", path, error)
    return deleted, gone

  def sweep(self, protected: Collection[str] = ()) -> List[str]:
    """Deletes the units past retain_days, then the oldest until within the budget.

    Args:
      protected: ids of alarms (AlarmController.active_ids), or paths of their folders or
        files: those units are kept whatever their age.

    Returns:
      The deleted paths (folders and files), in the order deleted.
    """
    ids = {item for item in protected if os.sep not in item and "/" not in item}
    paths = [os.path.abspath(item) for item in protected]
    cutoff = None if self.retain_days is None else (
        self.clock() - self.retain_days * SECONDS_PER_DAY)
    deleted: List[str] = []
    kept = []
    for unit in self.scan():
      if self._is_protected(unit, ids, paths):
        kept.append(unit)
      elif cutoff is not None and unit.mtime < cutoff:
        deleted += self._delete(unit)[0]
      else:
        kept.append(unit)
    if self.max_disk_bytes is not None:
      total = sum(unit.size_bytes for unit in kept)
      for unit in kept:  # oldest first
        if total <= self.max_disk_bytes:
          break
        if self._is_protected(unit, ids, paths):
          continue
        paths_deleted, gone = self._delete(unit)
        deleted += paths_deleted
        if gone:
          total -= unit.size_bytes
      if total > self.max_disk_bytes:
        logging.warning("Retention: the events under %s take %d bytes, over the budget of %d; "
                        "what is left belongs to open alarms.", self.root, total,
                        self.max_disk_bytes)
    return deleted
