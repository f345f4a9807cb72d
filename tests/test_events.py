"""daml_tf.inference.events: the alarm events of a hand-made score sequence."""

import json

import numpy as np

from daml_tf.inference import events
from daml_tf.inference.streaming import FrameResult

THRESHOLD = 1.0
FRAME_SIZE = (40, 60)  # 4x6 latent cells of 10x10 pixels


def _hot_map(row, col, value):
  error_map = np.full((4, 6), 0.01, np.float32)
  error_map[row, col] = value
  return error_map


def _results(smoothed_scores, hot_cells):
  """FrameResults of a hand-made smoothed score sequence; None: not scored yet."""
  results = []
  for index, (value, cell) in enumerate(zip(smoothed_scores, hot_cells)):
    if value is None:
      results.append(FrameResult(index, None, None, False))
    else:
      results.append(FrameResult(index, value, value, value > THRESHOLD,
                                 error_map=_hot_map(*cell, value)))
  return results


def _write(tmp_path, smoothed_scores, hot_cells):
  path = str(tmp_path / events.EVENTS_FILE)
  writer = events.AlarmEventWriter(path, "gate", clock=lambda: "2026-12-01T17:00:00.000Z")
  lines_while_running = []
  for result in _results(smoothed_scores, hot_cells):
    writer.update(result, result.index / 10, FRAME_SIZE)
    # Flushed as it happens: the file holds every event so far, before close.
    with open(path) as f:
      lines_while_running.append(len(f.readlines()))
  writer.close()
  with open(path) as f:
    return [json.loads(line) for line in f], lines_while_running, writer


def test_event_sequence_of_two_alarms_with_peak_and_box(tmp_path):
  scores = [None, None, 0.5, 1.5, 3.0, 2.0, 0.8, 0.9, 1.2, 0.4]
  cells = [None, None, (0, 0), (1, 1), (2, 3), (3, 5), (0, 0), (0, 0), (1, 4), (0, 0)]
  lines, counts, writer = _write(tmp_path, scores, cells)
  assert [(e["event"], e["frame"]) for e in lines] == [
      ("alarm_start", 3), ("alarm_end", 6), ("alarm_start", 8), ("alarm_end", 9)]
  assert counts == [0, 0, 0, 1, 1, 1, 2, 2, 3, 4] and writer.events == 4
  start, end = lines[0], lines[1]
  assert start == {"camera": "gate", "event": "alarm_start", "frame": 3, "timestamp_s": 0.3,
                   "time": "2026-12-01T17:00:00.000Z", "score": 1.5, "peak_score": 1.5,
                   "box": [10, 10, 20, 20]}
  # The end carries its own frame's score, the alarm's peak and the box of the peak frame.
  assert (end["score"], end["peak_score"], end["box"]) == (0.8, 3.0, [30, 20, 40, 30])
  assert end["timestamp_s"] == 0.6
  assert (lines[3]["peak_score"], lines[3]["box"]) == (1.2, [40, 10, 50, 20])


def test_alarm_open_at_the_end_of_the_input_ends_at_the_last_frame(tmp_path):
  scores = [None, 0.2, 1.1, 1.4, 1.3]
  cells = [None, (0, 0), (0, 1), (3, 0), (2, 2)]
  lines, _, _ = _write(tmp_path, scores, cells)
  assert [(e["event"], e["frame"], e["score"], e["peak_score"], e["box"]) for e in lines] == [
      ("alarm_start", 2, 1.1, 1.1, [10, 0, 20, 10]),
      ("alarm_end", 4, 1.3, 1.4, [0, 30, 10, 40])]


def test_no_alarm_no_event_and_a_real_clock(tmp_path):
  lines, _, writer = _write(tmp_path, [None, 0.1, 0.2], [None, (0, 0), (0, 0)])
  assert lines == [] and writer.events == 0
  assert events.utc_now_iso().endswith("Z") and events.utc_now_iso()[10] == "T"


class _ListSink:
  """A sink keeping its records in memory."""

  def __init__(self):
    self.records = []
    self.closed = False

  def emit(self, record):
    self.records.append(record)

  def close(self):
    self.closed = True


def test_every_sink_receives_the_records_of_the_file_lines(tmp_path):
  path = str(tmp_path / events.EVENTS_FILE)
  first, second = _ListSink(), _ListSink()
  writer = events.AlarmEventWriter(path, "gate", sinks=[first, second])
  scores = [None, 0.5, 1.5, 2.0, 0.3, 1.1]
  cells = [None, (0, 0), (1, 1), (2, 3), (0, 0), (1, 4)]
  for result in _results(scores, cells):
    writer.update(result, result.index / 10, FRAME_SIZE)
  writer.close()
  with open(path) as f:
    lines = f.read().splitlines()
  assert len(lines) == 4 and writer.events == 4
  assert [events.encode(r) for r in first.records] == lines
  assert second.records == first.records
  # Sinks given to the writer belong to whoever made them: it does not close them.
  assert not first.closed and not second.closed
