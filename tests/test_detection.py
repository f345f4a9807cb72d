"""`python -m daml_tf.detect` (daml_tf.inference.detection) on a recorded video: the scores
file, the plot, the annotated video, and one message on bad input; on a live stream from a real
server on 127.0.0.1 that is killed and started again, and on one that is gone for good."""

import csv
import dataclasses
import json
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import testing
from testing import moving_frames, write_pngs, write_video
from daml_tf import errors
from daml_tf import run_dir
from daml_tf import training
from daml_tf import video_io
from daml_tf.inference import detection
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


def _start_detect(log_path, *args):
  """`python -m daml_tf.detect` in the background, its log in a file (a pipe could fill up)."""
  log = open(log_path, "w")
  return subprocess.Popen([sys.executable, "-m", "daml_tf.detect", *args], cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=log, text=True)


def _wait_until(condition, process, what, timeout=120):
  deadline = time.monotonic() + timeout
  while not condition():
    assert process.poll() is None, f"detect ended while waiting for {what}"
    assert time.monotonic() < deadline, f"timed out waiting for {what}"
    time.sleep(0.1)


def _rows_written(scores_csv):
  return len(scores_csv.read_text().splitlines()) - 1 if scores_csv.exists() else 0


@pytest.mark.slow  # About 20 s: a process, a stream, a 3 s outage.
def test_detect_on_a_live_stream_restarts_after_a_gap_and_stops_on_sigterm(tmp_path):
  model_dir = tmp_path / "model"
  cfg, _ = testing.make_run(model_dir, {"threshold": 0.0, "quantile": 0.9})
  span = cfg.data.clip_span
  video = testing.write_stream_video(tmp_path / "camera.ts", moving_frames(100, rgb=True))
  url = f"udp://127.0.0.1:{testing.free_port(socket.SOCK_DGRAM)}"
  output_dir, log_path = tmp_path / "out", tmp_path / "detect.log"
  scores_csv = output_dir / "scores.csv"
  server = testing.serve_ffmpeg(video, url)
  # --fps=10: the annotated video must take the stream's own 25 frames/s instead.
  process = _start_detect(log_path, f"--model_dir={model_dir}", f"--input={url}",
                          f"--output_dir={output_dir}", "--read_timeout_s=2",
                          "--reconnect_initial_s=0.2", "--reconnect_max_s=1", "--annotate",
                          "--fps=10")
  try:
    _wait_until(lambda: _rows_written(scores_csv) > 15, process, "frames before the gap")
    testing.stop_server(server)
    # UDP: a sender gone is noticed by the 2 s read timeout; 3 s is a drop, not a pause.
    time.sleep(3.0)
    server = testing.serve_ffmpeg(video, url)
    _wait_until(lambda: "Gap of" in log_path.read_text(), process, "the gap")
    gap_at = _rows_written(scores_csv)
    _wait_until(lambda: _rows_written(scores_csv) > gap_at + span + 5, process,
                "frames after the gap")
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
  finally:
    if process.poll() is None:
      process.kill()
    testing.stop_server(server)
  log = log_path.read_text()
  assert process.returncode == 0, log
  assert "SIGTERM received" in log and "stop=signal" in log and "gaps=1" in log
  gap = int(log.split("Gap of ")[1].split("before frame ")[1].split(" ")[0])
  rows = _csv_rows(scores_csv)
  assert [int(r["frame"]) for r in rows] == list(range(len(rows)))
  scored = [bool(r["score"]) for r in rows]
  # A fresh warm-up after the gap: no clip holds frames from both sides.
  assert scored == ([False] * span + [True] * (gap - span) + [False] * span
                    + [True] * (len(rows) - gap - span))
  stamps = [float(r["timestamp_s"]) for r in rows]
  assert stamps == sorted(stamps) and stamps[gap] - stamps[gap - 1] >= 1.5
  with open(output_dir / "events.jsonl") as f:
    events = [(e["event"], e["frame"]) for e in map(json.loads, f)]
  # Threshold 0: alarms on every scored frame; the first alarm ends where the frames stopped.
  assert events == [("alarm_start", span), ("alarm_end", gap - 1),
                    ("alarm_start", gap + span), ("alarm_end", len(rows) - 1)]
  annotated = [p for p in output_dir.iterdir() if p.stem == "annotated"]
  assert video_io.video_fps(str(annotated[0])) == 25
  assert len(list(video_io.iter_frames(str(annotated[0])))) == len(rows)


def test_detect_gives_up_on_a_lost_stream_with_exit_status_1(tmp_path):
  model_dir = tmp_path / "model"
  testing.make_run(model_dir, {"threshold": 1e9, "quantile": 0.9})
  video = testing.write_stream_video(tmp_path / "camera.ts", moving_frames(100, rgb=True))
  url = f"http://127.0.0.1:{testing.free_port()}/camera.ts"
  output_dir, log_path = tmp_path / "out", tmp_path / "detect.log"
  scores_csv = output_dir / "scores.csv"
  server = testing.serve_ffmpeg(video, url)
  process = _start_detect(log_path, f"--model_dir={model_dir}", f"--input={url}",
                          f"--output_dir={output_dir}", "--reconnect_initial_s=0.1",
                          "--max_reconnects=2")
  try:
    _wait_until(lambda: _rows_written(scores_csv) > 10, process, "frames")
    testing.stop_server(server)
    process.wait(timeout=60)
  finally:
    if process.poll() is None:
      process.kill()
    testing.stop_server(server)
  log = log_path.read_text()
  assert process.returncode == 1, log
  assert "2 reopens in a row failed" in log and "stop=source_lost" in log
  assert "Traceback" not in log
  rows = _csv_rows(scores_csv)
  assert scores_csv.read_text().endswith("\n") and len(rows) > 10
  assert [int(r["frame"]) for r in rows] == list(range(len(rows)))


def test_detect_names_a_stream_it_cannot_open(tmp_path):
  model_dir = tmp_path / "model"
  testing.make_run(model_dir, {"threshold": 0.0, "quantile": 0.9})
  url = f"udp://127.0.0.1:{testing.free_port(socket.SOCK_DGRAM)}"
  cfg = detection.DetectConfig(model_dir=str(model_dir), inputs=(url,),
                               output_dir=str(tmp_path / "out"), read_timeout_s=0.5)
  with pytest.raises(errors.DataError, match=f"Cannot open the live input '{url}'.*no data"):
    detection.run_detection(cfg)
  with pytest.raises(errors.ConfigError, match="--read_timeout_s"):
    dataclasses.replace(cfg, read_timeout_s=0)
