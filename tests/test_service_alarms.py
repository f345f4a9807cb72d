"""The alarm state machine on hand-made score sequences: one test per rule (debounce,
hysteresis, cooldown merge and expiry, scene change, gap, peak updates, ids)."""

import random
import re

import numpy as np
import pytest

from daml_tf.service import alarms
from daml_tf.service import config


def run(scores, scene_changes=(), fps=1.0, seed=0, **settings):
  """(controller, events by frame index) of the scores at frame i = i / fps seconds."""
  controller = alarms.AlarmController(1.0, rng=random.Random(seed), **settings)
  events = {}
  for index, score in enumerate(scores):
    got = controller.update(index / fps, score, scene_changed=index in scene_changes)
    if got:
      events[index] = got
  return controller, events


def kinds(events):
  return {index: [event["event_type"] for event in got] for index, got in events.items()}


def test_debounce_starts_at_the_min_frames_th_frame_above():
  _, events = run([2, 2, 0, 2, 2, 2, 2], min_frames=3)
  assert kinds(events) == {5: ["alarm_start"]}
  start = events[5][0]
  assert start["start_time"] == 5.0 and start["start_frame_index"] == 5
  assert start["first_above_time"] == 3.0 and start["first_above_frame_index"] == 3
  # Equal to the threshold is not above it.
  _, events = run([1.0, 1.0, 1.0], min_frames=1)
  assert not events


def test_hysteresis_ends_below_end_ratio_times_threshold():
  _, events = run([2, 2, 2, 0.9, 0.85, 0.79, 2], min_frames=3, end_ratio=0.8, cooldown_s=0)
  assert kinds(events) == {2: ["alarm_start"], 5: ["alarm_end"]}
  end = events[5][0]
  assert (end["end_time"], end["end_frame_index"], end["end_reason"]) == (4.0, 4, "score")
  assert end["id"] == events[2][0]["id"] and end["time"] == 5.0


def test_cooldown_merges_alarms_into_one():
  scores = [2, 2, 0, 0, 2, 3, 0] + [0] * 6
  _, events = run(scores, min_frames=2, cooldown_s=5)
  # Ends at frame 2 (last frame above the end level: 1); restarts at 5, 4 s later: merged, and
  # the higher peak of the second part is an update. Ends again at 6 (end 5), emitted once 5 s
  # have passed after that, at frame 11.
  assert kinds(events) == {1: ["alarm_start"], 5: ["alarm_update"], 11: ["alarm_end"]}
  alarm_id = events[1][0]["id"]
  assert events[5][0]["id"] == events[11][0]["id"] == alarm_id
  end = events[11][0]
  assert (end["start_time"], end["end_time"], end["peak_score"], end["peak_time"]) == (
      1.0, 5.0, 3.0, 5.0)


def test_cooldown_expiry_then_a_new_alarm():
  scores = [2, 2, 0] + [0] * 4 + [2, 2, 0]
  controller, events = run(scores, min_frames=2, cooldown_s=5)
  # End at 1; at frame 7 (6 s after it) the cooldown is over: the end is emitted before the
  # new alarm starts at 8.
  assert kinds(events) == {1: ["alarm_start"], 7: ["alarm_end"], 8: ["alarm_start"]}
  assert events[7][0]["end_time"] == 1.0
  assert events[8][0]["id"] != events[1][0]["id"]
  # Within exactly cooldown_s it still merges.
  _, events = run([2, 2, 0] + [0] * 2 + [2, 2], min_frames=2, cooldown_s=5)
  assert kinds(events) == {1: ["alarm_start"]}
  # The alarm ended by the score is still active (its files are protected) until emitted.
  ended = controller.update(20.0, 0.0)
  assert [event["event_type"] for event in ended] == ["alarm_end"] and not controller.active_ids()


def test_scene_change_ends_the_alarm_and_suppresses_starts():
  scores = [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
  _, events = run(scores, scene_changes={3}, min_frames=2, cooldown_s=5)
  # Open at 1; the scene change at 3 ends it at once (last frame 2), and frames 3, 4 and 5 do
  # not count toward a start: 6 and 7 do.
  assert kinds(events) == {1: ["alarm_start"], 3: ["alarm_end", "scene_change"],
                           7: ["alarm_start"]}
  end, change = events[3]
  assert (end["end_time"], end["end_reason"]) == (2.0, "scene_change")
  assert change["id"] is None and change["time"] == 3.0 and change["frame_index"] == 3


def test_scene_change_flushes_a_pending_end():
  _, events = run([2, 2, 0, 0], scene_changes={3}, min_frames=2, cooldown_s=5)
  assert kinds(events) == {1: ["alarm_start"], 3: ["alarm_end", "scene_change"]}
  assert events[3][0]["end_reason"] == "score"


def test_gap_closes_the_alarm_and_restarts_the_debounce():
  controller, events = run([2, 2, 2], min_frames=2)
  assert kinds(events) == {1: ["alarm_start"]}
  ended = controller.gap()
  assert [(event["event_type"], event["end_reason"], event["end_time"]) for event in ended] == [
      ("alarm_end", "gap", 2.0)]
  assert controller.update(3.0, 2.0) == []  # one frame above is not min_frames
  assert [event["event_type"] for event in controller.update(4.0, 2.0)] == ["alarm_start"]
  assert controller.gap()[0]["end_reason"] == "gap" and controller.gap() == []


def test_none_scores_neither_continue_nor_end_nor_break_the_run():
  _, events = run([2, None, 2, 2, None, None, 2], min_frames=3, cooldown_s=0)
  assert kinds(events) == {3: ["alarm_start"]}
  assert events[3][0]["first_above_time"] == 0.0
  _, events = run([2, 2, float("nan"), 0.5], min_frames=2, cooldown_s=0)
  assert kinds(events) == {1: ["alarm_start"], 3: ["alarm_end"]}
  assert events[3][0]["end_time"] == 1.0


def test_peak_updates():
  _, events = run([2, 3, 2.5, 4, 1], min_frames=1)
  assert kinds(events) == {0: ["alarm_start"], 1: ["alarm_update"], 3: ["alarm_update"]}
  assert [events[i][0]["peak_score"] for i in (0, 1, 3)] == [2.0, 3.0, 4.0]
  assert (events[3][0]["peak_time"], events[3][0]["peak_frame_index"]) == (3.0, 3)
  # The debounce run's peak counts, though it came before the start.
  _, events = run([2, 5, 3], min_frames=3)
  assert (events[2][0]["peak_score"], events[2][0]["peak_frame_index"]) == (5.0, 1)


def test_close_emits_open_and_pending_ends():
  controller, _ = run([2, 2], min_frames=1)
  assert [event["end_reason"] for event in controller.close()] == ["close"]
  controller, _ = run([2, 0], min_frames=1, cooldown_s=5)
  assert controller.active_ids()
  assert [event["end_reason"] for event in controller.close()] == ["score"]
  assert controller.close() == [] and not controller.active_ids()


def test_ids_are_frigates_form_and_reproducible():
  _, events = run([0] * 12 + [2], fps=10.0, min_frames=1, seed=7)
  alarm_id = events[12][0]["id"]
  assert re.fullmatch(r"1\.200000-[a-z0-9]{6}", alarm_id)
  assert run([0] * 12 + [2], fps=10.0, min_frames=1, seed=7)[1][12][0]["id"] == alarm_id
  ids = {alarms.alarm_id(1.2, random.Random(seed)) for seed in range(20)}
  assert len(ids) == 20


def test_event_keys_and_config():
  controller = alarms.AlarmController.from_config(
      2.0, config.AlarmConfig(min_frames=1, end_ratio=0.5, cooldown_s=0))
  assert controller.end_level == 1.0
  start, = controller.update(100.0, 3.0, frame_index=40)
  assert set(start) == {
      "event_type", "id", "time", "frame_index", "score", "start_time", "start_frame_index",
      "first_above_time", "first_above_frame_index", "end_time", "end_frame_index",
      "end_reason", "peak_score", "peak_time", "peak_frame_index"}
  assert start["frame_index"] == 40 and start["end_time"] is None
  assert controller.update(100.1, 1.0) == []  # at the end level: continues
  assert controller.update(100.2, 0.99)[0]["end_frame_index"] == 41
  # A negative threshold's end level is below it.
  assert alarms.AlarmController(-2.0, end_ratio=0.5).end_level == -3.0
  with pytest.raises(ValueError):
    alarms.AlarmController(1.0, min_frames=0)


def test_is_scene_change():
  dark = np.zeros((10, 10), np.uint8)
  half = dark.copy()
  half[:5] = 255
  assert alarms.is_scene_change(dark, half, delta=0.15, fraction=0.5)
  assert not alarms.is_scene_change(dark, half, delta=0.15, fraction=0.6)
  slight = np.full((10, 10, 3), 0.1, np.float32)
  assert not alarms.is_scene_change(np.zeros((10, 10, 3), np.float32), slight, delta=0.15,
                                    fraction=0.5)
  assert alarms.is_scene_change(dark, np.zeros((5, 5), np.uint8), delta=0.15, fraction=0.5)
