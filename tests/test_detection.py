"""`python -m daml_tf.detect` (daml_tf.inference.detection) on a recorded video: the scores
file, the plot, the annotated video, and one message on bad input; on a live stream from a real
server on 127.0.0.1 that is killed and started again, and on one that is gone for good."""

import contextlib
import dataclasses
import socket

import numpy as np
import pytest

import testing
from testing import csv_rows, json_lines, moving_frames, rows_written, run_detect
from testing import wait_until, write_pngs, write_video
from daml_tf import errors
from daml_tf import run_dir
from daml_tf.training import loop as training
from daml_tf.data import video_io
from daml_tf.inference import detection
from daml_tf import localize
from daml_tf.inference import streaming

@pytest.fixture(scope="module")
def trained_model_dir(tiny_data, tmp_path_factory):
  """A model directory trained for one step (one train-phase epoch of one batch)."""
  model_dir = tmp_path_factory.mktemp("model")
  cfg = testing.tiny_config(tiny_data, model_dir, data=dict(interval=2, clips_per_epoch=2),
                            train_epochs=1, finetune_epochs=0, image_summary_steps=0,
                            export=False)
  assert training.train(cfg).metrics["global_step"] == 1
  return str(model_dir)


def test_detect_cli_end_to_end(trained_model_dir, tmp_path):
  frames = moving_frames(16, 40, 56, rgb=True)
  video = write_video(tmp_path / "input.avi", frames)
  # threshold.json is the default; --threshold overrides it.
  run_dir.save_threshold(trained_model_dir, 1e9, 0.995)
  detector = streaming.StreamingDetector.from_model_dir(trained_model_dir)
  assert detector.threshold == 1e9
  results = [detector.process(frame) for _, _, frame in video_io.iter_frames(video)]
  expected = [result.score for result in results]
  span = detector.data_cfg.clip_span
  threshold = float(np.median(expected[span:]))

  output_dir = tmp_path / "out"
  result = run_detect(f"--model_dir={trained_model_dir}", f"--input={video}",
                      f"--output_dir={output_dir}", f"--threshold={threshold!r}",
                      "--annotate", "--log_every=5")
  assert result.returncode == 0, result.stderr
  assert "frames=16 scored=11 alarms=" in result.stderr
  assert "fps" in result.stderr

  rows = csv_rows(output_dir / "scores.csv")
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
  events = json_lines(output_dir / "events.jsonl")
  flags = [0] * span + [int(a) for a in alarms]
  starts = [i for i in range(16) if flags[i] and not (i and flags[i - 1])]
  ends = [i for i in range(1, 16) if flags[i - 1] and not flags[i]] + ([15] if flags[-1] else [])
  assert [(e["event"], e["frame"]) for e in events] == [
      pair for start, end in zip(starts, ends)
      for pair in (("alarm_start", start), ("alarm_end", end))]
  assert all(e["camera"] == "input" for e in events)
  for e in events:
    assert e["peak_score"] >= threshold and e["time"].endswith("Z")
  # The box: of the start frame on alarm_start, of the alarm's peak frame on alarm_end.
  for k, start in enumerate(starts):
    alarm_frames = [start]
    while alarm_frames[-1] + 1 < 16 and flags[alarm_frames[-1] + 1]:
      alarm_frames.append(alarm_frames[-1] + 1)
    peak = max(alarm_frames, key=lambda i: expected[i])
    start_event, end_event = events[2 * k], events[2 * k + 1]
    assert start_event["box"] == list(localize.anomaly_box(results[start].error_map, (40, 56)))
    assert end_event["box"] == list(localize.anomaly_box(results[peak].error_map, (40, 56)))
    assert end_event["peak_score"] == pytest.approx(expected[peak], rel=1e-6)
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
  result = run_detect(*args)
  assert result.returncode == 1, result.stderr
  assert message in result.stderr
  assert "Traceback" not in result.stderr


def test_detect_limits_and_camera_name(tmp_path):
  model_dir = tmp_path / "model"
  testing.make_run(model_dir, {"threshold": 0.0, "quantile": 0.9})
  folder = write_pngs(tmp_path / "frames", moving_frames(30))
  # --fps=10: frame i is at 0.1 * i s; 1.2 s of stream time is frames 0..11.
  for flag, frames in (("--max_frames=7", 7), ("--duration_s=1.2", 12)):
    output_dir = tmp_path / flag[2:6]
    result = run_detect(f"--model_dir={model_dir}", f"--input={folder}", "--fps=10",
                        f"--output_dir={output_dir}", flag, "--camera_name=gate 2",
                        "--plot_window=4")
    assert result.returncode == 0, result.stderr
    assert [int(r["frame"]) for r in csv_rows(output_dir / "scores.csv")] == list(range(frames))
    events = json_lines(output_dir / "events.jsonl")
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
  scores_csv = output_dir / "scores.csv"
  with testing.detect_process(f"--model_dir={model_dir}", f"--input={video}",
                              f"--output_dir={output_dir}") as process:
    wait_until(lambda: rows_written(scores_csv) > 10, 120, "rows", process=process)
    stderr = testing.sigterm(process)
  assert process.returncode == 0, stderr
  assert "SIGTERM received" in stderr and "stop=signal" in stderr
  text = scores_csv.read_text()
  assert text.endswith("\n")
  rows = csv_rows(scores_csv)
  assert 10 <= len(rows) < 4000
  assert [int(r["frame"]) for r in rows] == list(range(len(rows)))
  assert all(r["score"] and r["alarm"] == "1" for r in rows[5:])
  events = json_lines(output_dir / "events.jsonl")
  assert [(e["event"], e["frame"]) for e in events] == [
      ("alarm_start", 5), ("alarm_end", len(rows) - 1)]
  assert (output_dir / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _live_setup(tmp_path, threshold):
  """For detect on a live stream: a tiny run whose threshold.json says `threshold`, and a 4 s
  MPEG-TS video to serve: (model_dir, the run's config, the video)."""
  model_dir = tmp_path / "model"
  cfg, _ = testing.make_run(model_dir, {"threshold": threshold, "quantile": 0.9})
  video = testing.write_stream_video(tmp_path / "camera.ts", moving_frames(100, rgb=True))
  return model_dir, cfg, video


@contextlib.contextmanager
def _detect_with_log(log_path, *args):
  """testing.detect_process with its log in a file (a pipe could fill up)."""
  with open(log_path, "w") as log, testing.detect_process(*args, stderr=log) as process:
    yield process


@pytest.mark.slow  # About 20 s: a process, a stream, a 3 s outage.
def test_detect_on_a_live_stream_restarts_after_a_gap_and_stops_on_sigterm(tmp_path):
  model_dir, cfg, video = _live_setup(tmp_path, 0.0)
  span = cfg.data.clip_span
  url = f"udp://127.0.0.1:{testing.free_port(socket.SOCK_DGRAM)}"
  output_dir, log_path = tmp_path / "out", tmp_path / "detect.log"
  scores_csv = output_dir / "scores.csv"
  # --fps=10: the annotated video must take the stream's own 25 frames/s instead.
  with testing.Server(lambda: testing.serve_ffmpeg(video, url)) as server, _detect_with_log(
      log_path, f"--model_dir={model_dir}", f"--input={url}", f"--output_dir={output_dir}",
      "--read_timeout_s=2", "--reconnect_initial_s=0.2", "--reconnect_max_s=1", "--annotate",
      "--fps=10") as process:
    wait_until(lambda: rows_written(scores_csv) > 15, 120, "frames before the gap", 0.1,
               process)
    # UDP: a sender gone is noticed by the 2 s read timeout; 3 s is a drop, not a pause.
    server.restart(3.0)
    wait_until(lambda: "Gap of" in log_path.read_text(), 120, "the gap", 0.1, process)
    gap_at = rows_written(scores_csv)
    wait_until(lambda: rows_written(scores_csv) > gap_at + span + 5, 120,
               "frames after the gap", 0.1, process)
    testing.sigterm(process)
  log = log_path.read_text()
  assert process.returncode == 0, log
  assert "SIGTERM received" in log and "stop=signal" in log and "gaps=1" in log
  gap = int(log.split("Gap of ")[1].split("before frame ")[1].split(" ")[0])
  rows = csv_rows(scores_csv)
  assert [int(r["frame"]) for r in rows] == list(range(len(rows)))
  scored = [bool(r["score"]) for r in rows]
  # A fresh warm-up after the gap: no clip holds frames from both sides.
  assert scored == ([False] * span + [True] * (gap - span) + [False] * span
                    + [True] * (len(rows) - gap - span))
  stamps = [float(r["timestamp_s"]) for r in rows]
  assert stamps == sorted(stamps) and stamps[gap] - stamps[gap - 1] >= 1.5
  events = [(e["event"], e["frame"]) for e in json_lines(output_dir / "events.jsonl")]
  # Threshold 0: alarms on every scored frame; the first alarm ends where the frames stopped.
  assert events == [("alarm_start", span), ("alarm_end", gap - 1),
                    ("alarm_start", gap + span), ("alarm_end", len(rows) - 1)]
  annotated = [p for p in output_dir.iterdir() if p.stem == "annotated"]
  assert video_io.video_fps(str(annotated[0])) == 25
  assert len(list(video_io.iter_frames(str(annotated[0])))) == len(rows)


def test_detect_gives_up_on_a_lost_stream_with_exit_status_1(tmp_path):
  model_dir, _, video = _live_setup(tmp_path, 1e9)
  url = f"http://127.0.0.1:{testing.free_port()}/camera.ts"
  output_dir, log_path = tmp_path / "out", tmp_path / "detect.log"
  scores_csv = output_dir / "scores.csv"
  with testing.Server(lambda: testing.serve_ffmpeg(video, url)) as server, _detect_with_log(
      log_path, f"--model_dir={model_dir}", f"--input={url}", f"--output_dir={output_dir}",
      "--reconnect_initial_s=0.1", "--max_reconnects=2") as process:
    wait_until(lambda: rows_written(scores_csv) > 10, 120, "frames", 0.1, process)
    server.stop()
    process.wait(timeout=60)
  log = log_path.read_text()
  assert process.returncode == 1, log
  assert "2 reopens in a row failed" in log and "stop=source_lost" in log
  assert "Traceback" not in log
  rows = csv_rows(scores_csv)
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
