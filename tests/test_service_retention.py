"""Retention of alarm files by age and disk budget, with a controllable clock (mtimes set with
os.utime; nothing sleeps)."""

import os

import pytest

from daml_tf.service import retention

DAY = 86400.0
NOW = 1_800_000_000.0


def make_event(root, camera, event_id, age_days, sizes=(100, 50, 200)):
  """An event folder with a snapshot, a clean snapshot and a clip of the given sizes, every
  file (and the folder) last modified age_days before NOW."""
  folder = retention.event_dir(str(root), camera, event_id)
  os.makedirs(folder)
  names = (retention.SNAPSHOT_FILE, retention.CLEAN_SNAPSHOT_FILE, retention.CLIP_FILE)
  mtime = NOW - age_days * DAY
  for name, size in zip(names, sizes):
    path = os.path.join(folder, name)
    with open(path, "wb") as file:
      file.write(b"x" * size)
    os.utime(path, (mtime, mtime))
  os.utime(folder, (mtime, mtime))
  return folder


def make_retention(root, retain_days=10, max_disk_bytes=None):
  return retention.Retention(str(root), retain_days, max_disk_bytes, clock=lambda: NOW)


def test_deletes_events_older_than_retain_days(tmp_path):
  old = make_event(tmp_path, "gate", "1.000000-aaaaaa", age_days=11)
  new = make_event(tmp_path, "gate", "2.000000-bbbbbb", age_days=9)
  other = make_event(tmp_path, "yard", "3.000000-cccccc", age_days=30)
  keep = tmp_path / "gate" / "events.jsonl"  # outside events/: never touched
  keep.write_text("{}")
  os.utime(keep, (0, 0))
  deleted = make_retention(tmp_path).sweep()
  assert sorted(deleted) == sorted([old, other])
  assert not os.path.exists(old) and not os.path.exists(other)
  assert os.path.isdir(new) and keep.exists()
  assert make_retention(tmp_path).sweep() == []


def test_a_file_still_being_written_keeps_its_event(tmp_path):
  folder = make_event(tmp_path, "gate", "1.000000-aaaaaa", age_days=20)
  clip = os.path.join(folder, retention.CLIP_FILE)
  os.utime(clip, (NOW, NOW))
  assert make_retention(tmp_path).sweep() == []


def test_protected_events_are_kept(tmp_path):
  by_id = make_event(tmp_path, "gate", "1.000000-aaaaaa", age_days=20)
  by_path = make_event(tmp_path, "gate", "2.000000-bbbbbb", age_days=20)
  by_file = make_event(tmp_path, "yard", "3.000000-cccccc", age_days=20)
  gone = make_event(tmp_path, "yard", "4.000000-dddddd", age_days=20)
  protected = {"1.000000-aaaaaa", by_path, os.path.join(by_file, retention.CLIP_FILE)}
  assert make_retention(tmp_path).sweep(protected) == [gone]
  assert all(os.path.isdir(folder) for folder in (by_id, by_path, by_file))


def test_disk_budget_deletes_oldest_first(tmp_path):
  # Each event is 350 bytes; a budget of 800 keeps the two newest.
  folders = [make_event(tmp_path, camera, f"{index}.000000-aaaaa{index}", age_days=age)
             for index, (camera, age) in enumerate([("gate", 5), ("yard", 4), ("gate", 3),
                                                    ("yard", 1)])]
  sweeper = make_retention(tmp_path, max_disk_bytes=800)
  assert sweeper.usage_bytes() == 4 * 350
  assert sweeper.sweep() == folders[:2]
  assert sweeper.usage_bytes() == 700


def test_disk_budget_skips_protected_events(tmp_path, caplog):
  oldest = make_event(tmp_path, "gate", "1.000000-aaaaaa", age_days=5)
  middle = make_event(tmp_path, "gate", "2.000000-bbbbbb", age_days=4)
  newest = make_event(tmp_path, "gate", "3.000000-cccccc", age_days=3)
  sweeper = make_retention(tmp_path, max_disk_bytes=400)
  assert sweeper.sweep({"1.000000-aaaaaa"}) == [middle, newest]
  assert os.path.isdir(oldest)
  # Only the protected one is left, still over a budget of 100: kept, with a warning.
  assert make_retention(tmp_path, max_disk_bytes=100).sweep({"1.000000-aaaaaa"}) == []
  assert "over the budget of 100" in caplog.text


def test_loose_files_are_grouped_by_event_id(tmp_path):
  events = tmp_path / "gate" / "events"
  events.mkdir(parents=True)
  paths = []
  for name, age in [("1.000000-aaaaaa.jpg", 20), ("1.000000-aaaaaa-clean.jpg", 20),
                    ("1.000000-aaaaaa.mp4", 1), ("2.000000-bbbbbb.jpg", 20), ("notes.txt", 20)]:
    path = events / name
    path.write_bytes(b"x" * 10)
    os.utime(path, (NOW - age * DAY,) * 2)
    paths.append(str(path))
  units = {unit.event_id: unit for unit in make_retention(tmp_path).scan()}
  assert set(units) == {"1.000000-aaaaaa", "2.000000-bbbbbb", "notes.txt"}
  assert units["1.000000-aaaaaa"].size_bytes == 30
  # The first event's clip is new, so all its files stay.
  assert sorted(make_retention(tmp_path).sweep()) == sorted([paths[3], paths[4]])


def test_missing_root_and_bad_arguments(tmp_path):
  assert make_retention(tmp_path / "absent").sweep() == []
  assert retention.Retention(str(tmp_path), None, clock=lambda: NOW).sweep() == []
  with pytest.raises(ValueError, match="retain_days"):
    retention.Retention(str(tmp_path), 0)
