"""`python -m daml_tf.detect` (daml_tf.inference.detection) on a recorded video: the scores
file, the plot, the annotated video, and one message on bad input."""

import csv
import json
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import testing
from testing import moving_frames, write_pngs, write_video
from daml_tf import run_dir
from daml_tf import training
from daml_tf import video_io
from daml_tf.inference import streaming

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained_model_dir(tiny_data, tmp_path_factory):
  """A model directory trained for one step (one train-phase epoch of one batch)."""
  model_dir = tmp_path_factory.mktemp("model")
  cfg = testing.tiny_config(tiny_data, model_dir, data=dict(interval=2, clips_per_epoch=2),
                            train_epochs=1, finetune_epochs=0, image_summary_steps=0,
                            export=False)
  assert training.train(cfg).metrics["global_step"] == 1
  return str(model_dir)


def _run_detect(*args):
  return subprocess.run([sys.executable, "-m", "daml_tf.detect", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=180)


def test_detect_cli_end_to_end(trained_model_dir, tmp_path):
  frames = moving_frames(16, 40, 56, rgb=True)
  video = write_video(tmp_path / "input.avi", frames)
  # threshold.json is the default; --threshold overrides it.
  run_dir.save_threshold(trained_model_dir, 1e9, 0.995)
  detector = streaming.StreamingDetector.from_model_dir(trained_model_dir)
  assert detector.threshold == 1e9
  expected = [detector.process(frame).score for _, _, frame in video_io.iter_frames(video)]
  span = detector.data_cfg.clip_span
  threshold = float(np.median(expected[span:]))

  output_dir = tmp_path / "out"
  result = _run_detect(f"--model_dir={trained_model_dir}", f"--input={video}",
                       f"--output_dir={output_dir}", f"--threshold={threshold!r}",
                       "--annotate", "--log_every=5")
  assert result.returncode == 0, result.stderr
  assert "frames=16 scored=11 alarms=" in result.stderr
  assert "fps" in result.stderr

  with open(output_dir / "scores.csv") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["frame", "timestamp_s", "score", "alarm"]
  assert [int(r["frame"]) for r in rows] == list(range(16))
  np.testing.assert_allclose([float(r["timestamp_s"]) for r in rows], np.arange(16) / 25,
                             atol=1e-6)
  assert all(r["score"] == "" and r["alarm"] == "0" for r in rows[:span])
  # Scores are written at float32 precision; parsed as float32 they are the detector's values.
  scores = np.array([r["score"] for r in rows[span:]], np.float32).astype(np.float64)
  np.testing.assert_allclose(scores, expected[span:], rtol=1e-5)
  alarms = [r["alarm"] == "1" for r in rows[span:]]
  assert alarms == list(scores > threshold) and 0 < sum(alarms) < len(alarms)

  # One alarm_start per run of alarms, one alarm_end after it (at the last frame if still open).
  with open(output_dir / "events.jsonl") as f:
    events = [json.loads(line) for line in f]
  flags = [0] * span + [int(a) for a in alarms]
  starts = [i for i in range(16) if flags[i] and not (i and flags[i - 1])]
  ends = [i for i in range(1, 16) if flags[i - 1] and not flags[i]] + ([15] if flags[-1] else [])
  assert [(e["event"], e["frame"]) for e in events] == [
      pair for start, end in zip(starts, ends)
      for pair in (("alarm_start", start), ("alarm_end", end))]
  assert all(e["camera"] == "input" for e in events)
  for e in events:
    x0, y0, x1, y1 = e["box"]
    assert 0 <= x0 < x1 <= 56 and 0 <= y0 < y1 <= 40
    assert e["peak_score"] >= threshold and e["time"].endswith("Z")
  assert (output_dir / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  annotated = [p for p in output_dir.iterdir() if p.stem == "annotated"]
  assert len(annotated) == 1 and annotated[0].suffix in (".mp4", ".avi")
  shapes = [frame.shape for _, _, frame in video_io.iter_frames(str(annotated[0]))]
  assert shapes == [(40, 56, 3)] * 16


@pytest.mark.parametrize("model_dir_flag,message", [
    ("--model_dir={tmp}/nowhere", "nowhere"),
    (None, "--model_dir"),
])
def test_detect_cli_without_model_dir_exits_with_one_message(tmp_path, model_dir_flag,
                                                             message):
  folder = write_pngs(tmp_path / "video", moving_frames(3))
  args = [f"--input={folder}", f"--output_dir={tmp_path / 'out'}"]
  if model_dir_flag:
    args.append(model_dir_flag.format(tmp=tmp_path))
  result = _run_detect(*args)
  assert result.returncode == 1, result.stderr
  assert message in result.stderr
  assert "Traceback" not in result.stderr


def _csv_rows(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_detect_limits_and_camera_name(tmp_path):
  model_dir = tmp_path / "model"
  testing.make_run(model_dir, {"threshold": 0.0, "quantile": 0.9})
  folder = write_pngs(tmp_path / "frames", moving_frames(30))
  # --fps=10: frame i is at 0.1 * i s; 1.2 s of stream time is frames 0..11.
  for flag, frames in (("--max_frames=7", 7), ("--duration_s=1.2", 12)):
    output_dir = tmp_path / flag[2:6]
    result = _run_detect(f"--model_dir={model_dir}", f"--input={folder}", "--fps=10",
                         f"--output_dir={output_dir}", flag, "--camera_name=gate 2",
                         "--plot_window=4")
    assert result.returncode == 0, result.stderr
    assert [int(r["frame"]) for r in _csv_rows(output_dir / "scores.csv")] == list(range(frames))
    with open(output_dir / "events.jsonl") as f:
      events = [json.loads(line) for line in f]
    # Threshold 0: one alarm from the first scored frame, ended at the last frame read.
    assert [(e["event"], e["frame"], e["camera"]) for e in events] == [
        ("alarm_start", 5, "gate 2"), ("alarm_end", frames - 1, "gate 2")]
    assert (output_dir / "scores.png").stat().st_size > 0


def test_detect_stops_on_sigterm_with_complete_files(tmp_path):
  model_dir = tmp_path / "model"
  testing.make_run(model_dir, {"threshold": 0.0, "quantile": 0.9})
  # Long enough that the signal comes well before the end.
  video = write_video(tmp_path / "long.avi", np.tile(moving_frames(50), (80, 1, 1, 3)))
  output_dir = tmp_path / "out"
  process = subprocess.Popen(
      [sys.executable, "-m", "daml_tf.detect", f"--model_dir={model_dir}", f"--input={video}",
       f"--output_dir={output_dir}"], cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  try:
    scores_csv = output_dir / "scores.csv"
    deadline = time.monotonic() + 120
    while not (scores_csv.exists() and len(scores_csv.read_text().splitlines()) > 10):
      assert process.poll() is None and time.monotonic() < deadline, "no rows appeared"
      time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
  finally:
    if process.poll() is None:
      process.kill()
  assert process.returncode == 0, stderr
  assert "SIGTERM received" in stderr and "stop=signal" in stderr
  text = scores_csv.read_text()
  assert text.endswith("\n")
  rows = _csv_rows(scores_csv)
  assert 10 <= len(rows) < 4000
  assert [int(r["frame"]) for r in rows] == list(range(len(rows)))
  assert all(r["score"] and r["alarm"] == "1" for r in rows[5:])
  with open(output_dir / "events.jsonl") as f:
    events = [json.loads(line) for line in f]
  assert [(e["event"], e["frame"]) for e in events] == [
      ("alarm_start", 5), ("alarm_end", len(rows) - 1)]
  assert (output_dir / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
