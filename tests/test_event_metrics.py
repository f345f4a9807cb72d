"""Event-level metrics against hand-computed values, and alarms from scores through the
AlarmController."""

import json

import numpy as np
import pytest

from daml_tf.service import config
from daml_tf.service import event_metrics


def flags(text):
  return np.array([int(char) for char in text])


def test_runs():
  assert event_metrics.runs(flags("0011100011")) == [(2, 5), (8, 10)]
  assert event_metrics.runs(flags("1")) == [(0, 1)]
  assert event_metrics.runs([]) == []


def test_hand_computed_example():
  # Intervals [2, 5) and [8, 10); the alarm [3, 4) finds the first one frame late.
  metrics = event_metrics.evaluate_events([flags("0011100011")], [flags("0001000000")], fps=2)
  assert metrics.num_intervals == 2 and metrics.num_found == 1
  assert metrics.event_recall == 0.5
  assert metrics.num_alarms == 1 and metrics.num_false_alarms == 0
  assert metrics.alarm_precision == 1.0
  assert metrics.mean_delay_frames == 1.0 and metrics.median_delay_frames == 1.0
  assert metrics.mean_delay_s == 0.5
  assert metrics.normal_frames == 5
  assert metrics.normal_hours == pytest.approx(5 / 2 / 3600)
  assert metrics.false_alarms_per_hour == 0.0


def test_false_alarms_early_alarms_and_intervals():
  labels = [flags("0000111100000000"), flags("00000000")]
  # Video 0: a false alarm [0, 2), an alarm from before the interval (delay 0) that runs into
  # it; video 1: one false alarm, given as intervals.
  alarms = [flags("1101111000000011"), [(3, 6)]]
  metrics = event_metrics.evaluate_events(labels, alarms, fps=[10, 5])
  assert metrics.event_recall == 1.0 and metrics.delays_frames == (0,)
  assert metrics.num_alarms == 4 and metrics.num_false_alarms == 3
  assert metrics.alarm_precision == 0.25
  normal_hours = (12 / 10 + 8 / 5) / 3600
  assert metrics.normal_hours == pytest.approx(normal_hours)
  assert metrics.false_alarms_per_hour == pytest.approx(3 / normal_hours)


def test_delay_is_the_first_alarm_frame_inside_the_interval():
  labels = [flags("0001111111"), flags("0111110000")]
  alarms = [[(5, 6), (7, 10)], [(0, 2)]]
  metrics = event_metrics.evaluate_events(labels, alarms, fps=1)
  assert metrics.delays_frames == (2, 0)
  assert metrics.mean_delay_frames == 1.0 and metrics.median_delay_frames == 1.0
  assert metrics.mean_delay_s == 1.0


def test_undefined_values_are_none_and_to_dict_is_json():
  metrics = event_metrics.evaluate_events([flags("0000")], [flags("0000")], fps=25)
  assert metrics.event_recall is None and metrics.alarm_precision is None
  assert metrics.mean_delay_frames is None and metrics.false_alarms_per_hour == 0.0
  all_anomalous = event_metrics.evaluate_events([flags("11")], [flags("11")], fps=25)
  assert all_anomalous.false_alarms_per_hour is None
  assert json.loads(json.dumps(all_anomalous.to_dict()))["delays_frames"] == [0]


def test_bad_inputs():
  with pytest.raises(ValueError, match="per-frame alarm flags"):
    event_metrics.evaluate_events([flags("0011")], [flags("001")], fps=1)
  with pytest.raises(ValueError, match="not within"):
    event_metrics.evaluate_events([flags("0011")], [[(2, 5)]], fps=1)
  with pytest.raises(ValueError, match="rates"):
    event_metrics.evaluate_events([flags("0011")], [flags("0011")], fps=[1, 2])


def test_alarm_intervals_from_scores():
  #          0    1    2    3    4    5    6    7    8    9    10   11
  scores = [0.0, 2.0, 2.0, 2.0, 0.9, 0.1, 0.1, 2.0, 2.0, 0.1, 0.1, 0.1]
  # min_frames 2: starts at 2, continues through 4 (0.9 >= 0.8), ends at 5.
  assert event_metrics.alarm_intervals(scores, fps=1, threshold=1.0, min_frames=2,
                                       cooldown_s=0) == [(2, 5), (8, 9)]
  # A cooldown of 4 s merges the restart at 8 (4 s after the end at 4).
  settings = config.AlarmConfig(min_frames=2, cooldown_s=4)
  assert event_metrics.alarm_intervals(scores, fps=1, threshold=1.0, alarm=settings) == [(2, 9)]
  # NaN is not scored; a scene change cuts the alarm.
  with_nan = [np.nan if index == 2 else score for index, score in enumerate(scores)]
  assert event_metrics.alarm_intervals(with_nan, 1, 1.0, min_frames=2, cooldown_s=0) == [
      (3, 5), (8, 9)]
  changes = np.zeros(len(scores), bool)
  changes[3] = True
  assert event_metrics.alarm_intervals(scores, 1, 1.0, scene_changes=changes, min_frames=1,
                                       cooldown_s=0) == [(1, 3), (7, 9)]


def test_alarm_intervals_per_video_feed_evaluate_events():
  labels = [flags("0001111000"), flags("0000000000")]
  scores = [[0, 0, 0, 0, 2, 2, 2, 0, 0, 0], [0, 2, 2, 0, 0, 0, 0, 0, 0, 0]]
  intervals = event_metrics.alarm_intervals_per_video(scores, fps=10, threshold=1.0,
                                                      min_frames=2, cooldown_s=0)
  assert intervals == [[(5, 7)], [(2, 3)]]
  metrics = event_metrics.evaluate_events(labels, intervals, fps=10)
  assert (metrics.event_recall, metrics.delays_frames, metrics.num_false_alarms) == (
      1.0, (2,), 1)
