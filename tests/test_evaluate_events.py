"""daml_tf.evaluate_events on a hand-made scores.csv: metrics computed by hand, the flags made
from the config dataclass, and the CLI (its line, its JSON, its one-line errors)."""

import csv
import dataclasses
import json
import subprocess
import sys

from absl import flags
import pytest

from daml_tf import errors
from daml_tf import evaluate_events
from testing import REPO

THRESHOLD = 0.55
FPS = 10
# Two videos whose first two frames were not scored (no rows), threshold 0.55:
#   video 01, anomalous frames 6-9: frame 3 alone above the threshold (a false alarm), 7-8
#     above (the interval found one frame late; 9 is at 0.4, above 0.5 * threshold);
#   video 02, anomalous frames 2-4 (from its first scored frame) and 10-11: frame 2 above (found
#     at once), frame 8 alone above (a false alarm), 10-11 never above (missed).
# Normal frames: 8 + 7 = 15, 1.5 s at 10 fps.
VIDEOS = {
    "01": ([0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0],
           [.1, .9, .1, .1, .2, .7, .8, .4, .1, .1, .1, .1]),
    "02": ([1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0],
           [.6, .2, .2, .1, .1, .1, .6, .1, .3, .3, .1, .1]),
}
FIRST_FRAME = 2
NORMAL_HOURS = 15 / FPS / 3600


def write_scores_csv(path, videos=None, first_frame=FIRST_FRAME):
  """evaluate's scores.csv columns; the rows of video 02 in reverse (order must not matter)."""
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["video", "frame", "score", "normalized_score", "label"])
    for name, (labels, scores) in (videos or VIDEOS).items():
      rows = [(name, first_frame + i, score, score, label)
              for i, (label, score) in enumerate(zip(labels, scores))]
      writer.writerows(reversed(rows) if name == "02" else rows)
  return str(path)


@pytest.fixture(name="scores_csv")
def fixture_scores_csv(tmp_path):
  return write_scores_csv(tmp_path / "scores.csv")


def evaluate(scores_csv, **settings):
  return evaluate_events.evaluate_scores_csv(evaluate_events.EventEvalConfig(
      scores_csv=scores_csv, **{"threshold": THRESHOLD, **settings}))


def test_no_controls_hand_computed(scores_csv):
  result = evaluate(scores_csv)
  metrics = result["metrics"]
  assert metrics["num_intervals"] == 3 and metrics["num_found"] == 2
  assert metrics["event_recall"] == pytest.approx(2 / 3)
  assert metrics["num_alarms"] == 4 and metrics["num_false_alarms"] == 2
  assert metrics["normal_frames"] == 15
  assert metrics["normal_hours"] == pytest.approx(NORMAL_HOURS)
  assert metrics["false_alarms_per_hour"] == pytest.approx(4800.0)
  assert metrics["delays_frames"] == [1, 0]
  assert metrics["mean_delay_frames"] == 0.5 and metrics["mean_delay_s"] == pytest.approx(0.05)
  assert result["num_intervals_from_first_scored_frame"] == 1
  assert result["settings"] == {
      "threshold": THRESHOLD, "threshold_file": None, "quantile": None, "fps": 10.0,
      "min_frames": 1, "end_ratio": 1.0, "cooldown_s": 0.0, "smoothing": "none"}
  first, second = result["videos"]
  # In the CSV's frame numbers.
  assert first == {"video": "01", "first_frame": 2, "scored_frames": 12, "normal_frames": 8,
                   "anomalous_intervals": [[6, 10]], "alarms": [[3, 4], [7, 9]],
                   "num_found": 1, "num_false_alarms": 1, "delays_frames": [1]}
  assert second["anomalous_intervals"] == [[2, 5], [10, 12]]
  assert second["alarms"] == [[2, 3], [8, 9]] and second["delays_frames"] == [0]


def test_debounce_and_hysteresis(scores_csv):
  # Only 7-8 are two frames in a row above: an alarm from 8, held through 9 (0.4 >= 0.275).
  result = evaluate(scores_csv, min_frames=2, end_ratio=0.5)
  metrics = result["metrics"]
  assert metrics["num_found"] == 1 and metrics["num_false_alarms"] == 0
  assert metrics["false_alarms_per_hour"] == 0.0
  assert metrics["delays_frames"] == [2] and metrics["mean_delay_s"] == pytest.approx(0.2)
  assert result["videos"][0]["alarms"] == [[8, 10]] and result["videos"][1]["alarms"] == []


def test_cooldown_merges_a_false_alarm_into_a_found_one(scores_csv):
  # Video 01: frame 3 and frame 7 are 0.4 s apart, within 0.5 s: one alarm [3, 9), which
  # overlaps the interval from its first frame. Video 02: 0.6 s apart, two alarms.
  result = evaluate(scores_csv, cooldown_s=0.5)
  assert result["videos"][0]["alarms"] == [[3, 9]]
  assert result["videos"][1]["alarms"] == [[2, 3], [8, 9]]
  metrics = result["metrics"]
  assert metrics["num_found"] == 2 and metrics["num_false_alarms"] == 1
  assert metrics["delays_frames"] == [0, 0]


def test_causal_smoothing(scores_csv):
  # Means of two: video 01 is above only at 8-9 (0.75, 0.6); video 02 only at its first frame
  # (0.6 alone), since 0.6 at frame 8 averages to 0.35.
  result = evaluate(scores_csv, smoothing="ma:2")
  assert result["settings"]["smoothing"] == "ma:2"
  assert result["videos"][0]["alarms"] == [[8, 10]]
  assert result["videos"][1]["alarms"] == [[2, 3]]
  assert result["metrics"]["num_false_alarms"] == 0
  assert result["metrics"]["delays_frames"] == [2, 0]


def test_sweep_covers_the_grid(scores_csv):
  rows = evaluate(scores_csv, sweep=True)["sweep"]
  assert len(rows) == 4 * 3 * 2
  by_settings = {(row["min_frames"], row["end_ratio"], row["cooldown_s"]): row for row in rows}
  assert by_settings[(1, 1.0, 0.0)]["num_false_alarms"] == 2
  # A 2 s cooldown merges both false alarms into the found alarms of their videos.
  assert by_settings[(1, 1.0, 2.0)]["num_found"] == 2
  assert by_settings[(1, 1.0, 2.0)]["num_false_alarms"] == 0
  assert by_settings[(2, 1.0, 0.0)]["num_found"] == 1
  assert by_settings[(5, 0.8, 5.0)]["event_recall"] == 0.0
  assert by_settings[(5, 0.8, 5.0)]["mean_delay_s"] is None
  table = evaluate_events.sweep_table(rows).splitlines()
  assert len(table) == 1 + len(rows) and "none" in table[-1]


def test_read_scores_csv_rejects_gaps_and_bad_rows(tmp_path):
  videos = evaluate_events.read_scores_csv(write_scores_csv(tmp_path / "ok.csv"))
  assert [video.name for video in videos] == ["01", "02"]
  assert videos[1].first_frame == 2 and list(videos[1].labels) == VIDEOS["02"][0]
  gap = tmp_path / "gap.csv"
  lines = open(write_scores_csv(gap)).read().splitlines()
  gap.write_text("\n".join(lines[:5] + lines[6:]) + "\n")
  with pytest.raises(errors.DataError, match="video 01 are not consecutive"):
    evaluate_events.read_scores_csv(str(gap))
  bad_label = write_scores_csv(tmp_path / "bad.csv", {"01": ([0, 2], [.1, .2])})
  with pytest.raises(errors.DataError, match="line 3"):
    evaluate_events.read_scores_csv(bad_label)
  columns = tmp_path / "columns.csv"
  columns.write_text("video,frame,score\n01,0,0.1\n")
  with pytest.raises(errors.DataError, match="no label column"):
    evaluate_events.read_scores_csv(str(columns))


@pytest.mark.parametrize("settings, message", [
    ({}, "No threshold"),
    ({"threshold": 1.0, "model_dir": "run"}, "not both"),
    ({"threshold": 1.0, "min_frames": 0}, "--min_frames"),
    ({"threshold": 1.0, "end_ratio": 1.5}, "--end_ratio"),
    ({"threshold": 1.0, "cooldown_s": -1.0}, "--cooldown_s"),
    ({"threshold": 1.0, "fps": 0.0}, "--fps"),
    ({"threshold": 1.0, "smoothing": "gauss:2"}, "looks at later frames"),
    ({"threshold": 1.0, "smoothing": "ma:0"}, "ma:N"),
])
def test_config_rejects_bad_settings(settings, message):
  with pytest.raises(errors.ConfigError, match=message):
    evaluate_events.EventEvalConfig(scores_csv="scores.csv", **settings)


def test_flags_are_the_config_fields():
  flag_values = flags.FlagValues()
  evaluate_events.define_flags(flag_values)
  evaluate_events.define_flags(flag_values)  # idempotent
  fields = dataclasses.fields(evaluate_events.EventEvalConfig)
  for field in fields:
    assert flag_values[field.name].help == field.metadata["help"]
  flag_values(["prog", "--scores_csv=s.csv", "--threshold=0.5", "--min_frames=3",
               "--cooldown_s=2", "--sweep"])
  assert evaluate_events.config_from_flags(flag_values) == evaluate_events.EventEvalConfig(
      scores_csv="s.csv", threshold=0.5, min_frames=3, cooldown_s=2.0, sweep=True)
  unparsed = flags.FlagValues()
  evaluate_events.define_flags(unparsed)
  with pytest.raises(flags.IllegalFlagValueError, match="scores_csv"):
    unparsed(["prog", "--threshold=0.5"])


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", "daml_tf.evaluate_events", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_cli_prints_the_line_and_writes_the_json(scores_csv, tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  (run / "threshold.json").write_text(json.dumps({"threshold": THRESHOLD, "quantile": 0.99}))
  output = tmp_path / "out" / "events.json"
  result = run_cli(f"--scores_csv={scores_csv}", f"--model_dir={run}", "--fps=10",
                   f"--output={output}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout == "event_recall=0.6667 false_alarms_per_hour=4800 mean_delay_s=0.05\n"
  written = json.loads(output.read_text())
  assert written["settings"]["threshold_file"] == str(run / "threshold.json")
  assert written["settings"]["quantile"] == 0.99
  assert written == json.loads(json.dumps(evaluate(scores_csv, model_dir=str(run),
                                                   threshold=None)))


def test_cli_controls_and_sweep(scores_csv):
  result = run_cli(f"--scores_csv={scores_csv}", f"--threshold={THRESHOLD}", "--min_frames=2",
                   "--end_ratio=0.5", "--sweep")
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  assert lines[0] == "event_recall=0.3333 false_alarms_per_hour=0 mean_delay_s=0.2"
  assert lines[1].split()[:3] == ["min_frames", "end_ratio", "cooldown_s"]
  assert len(lines) == 2 + 24


@pytest.mark.parametrize("make_args, message", [
    (lambda tmp, csv_path: [f"--scores_csv={tmp}/missing.csv", "--threshold=1"],
     "No scores file"),
    (lambda tmp, csv_path: [f"--scores_csv={csv_path}", f"--model_dir={tmp}"],
     "No threshold.json in"),
    (lambda tmp, csv_path: [f"--scores_csv={csv_path}"], "No threshold: give --threshold"),
    (lambda tmp, csv_path: [f"--scores_csv={csv_path}", "--threshold=1", "--end_ratio=0"],
     "--end_ratio must be in (0, 1]"),
])
def test_cli_expected_errors_are_one_line(tmp_path, scores_csv, make_args, message):
  result = run_cli(*make_args(tmp_path, scores_csv))
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  # TensorFlow's start-up lines come first; the error is the last line, and the only one.
  lines = result.stderr.strip().splitlines()
  assert message in lines[-1]
  assert sum(message in line for line in lines) == 1
  assert result.stdout == ""


def test_threshold_of_another_score_is_refused(scores_csv, tmp_path):
  (tmp_path / "metrics.json").write_text(json.dumps({"score": "frame_psnr"}))
  run = tmp_path / "run"
  run.mkdir()
  (run / "threshold.json").write_text(json.dumps({"threshold": 1.0, "score": "latent_mean"}))
  with pytest.raises(errors.DataError, match="--score=latent_mean"):
    evaluate(scores_csv, model_dir=str(run), threshold=None)
