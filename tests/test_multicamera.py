"""`python -m daml_tf.detect` with several --input (daml_tf.inference.multicamera): the camera
folders and their files, results equal to one detector per camera, per-camera stops, the
readers' queue policies and the camera names of DetectConfig."""

import getpass
import json
import pathlib
import shutil
import socket
import subprocess
import threading
import time

import numpy as np
from paho.mqtt import client as paho
import pytest

import testing
from testing import csv_rows, json_lines, moving_frames, rows_written, run_detect
from testing import wait_until, write_pngs, write_video
from daml_tf import errors
from daml_tf.data import video_io
from daml_tf.inference import detection
from daml_tf.inference import multicamera
from daml_tf.inference import sources
from daml_tf.inference import streaming

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """An untrained tiny run whose threshold.json says 0: every scored frame is an alarm."""
  path = tmp_path_factory.mktemp("model")
  testing.make_run(path, {"threshold": 0.0, "quantile": 0.9})
  return str(path)


def _expected_scores(model_dir, path, threshold):
  detector = streaming.StreamingDetector.from_model_dir(model_dir, threshold=threshold)
  return [detector.process(frame).score for _, _, frame in video_io.iter_frames(path)]


def test_detect_two_inputs_writes_a_complete_folder_per_camera(model_dir, tmp_path):
  inputs = {
      "gate": write_video(tmp_path / "gate.avi", moving_frames(18, 40, 56, rgb=True, seed=1)),
      "hall": write_pngs(tmp_path / "hall", moving_frames(11, seed=2)),
  }
  span = 5  # make_run's clip geometry: interval 2, k 3, delta 1.
  expected = {name: _expected_scores(model_dir, path, None) for name, path in inputs.items()}
  threshold = float(np.median([s for scores in expected.values() for s in scores[span:]]))
  output_dir = tmp_path / "out"
  result = run_detect(f"--model_dir={model_dir}", f"--input={inputs['gate']}",
                      f"--input={inputs['hall']}", "--camera_names=gate,hall",
                      f"--output_dir={output_dir}", f"--threshold={threshold!r}", "--annotate",
                      "--log_every=4")
  assert result.returncode == 0, result.stderr
  assert sorted(p.name for p in output_dir.iterdir()) == ["gate", "hall"]
  assert "camera gate: frames=18 scored=13" in result.stderr
  assert "camera hall: frames=11 scored=6" in result.stderr
  assert "cameras=2 frames=29" in result.stderr
  for name, path in inputs.items():
    folder = output_dir / name
    rows = csv_rows(folder / "scores.csv")
    count = len(expected[name])
    assert [int(r["frame"]) for r in rows] == list(range(count))
    assert all(r["score"] == "" for r in rows[:span])
    scores = np.array([r["score"] for r in rows[span:]], np.float32).astype(np.float64)
    np.testing.assert_allclose(scores, expected[name][span:], rtol=1e-5)
    alarms = [r["alarm"] == "1" for r in rows[span:]]
    assert alarms == list(scores > threshold)
    events = json_lines(folder / "events.jsonl")
    assert {e["camera"] for e in events} <= {name}
    assert len([e for e in events if e["event"] == "alarm_start"]) == len(
        [e for e in events if e["event"] == "alarm_end"])
    assert (folder / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (annotated,) = [p for p in folder.iterdir() if p.stem == "annotated"]
    assert len(list(video_io.iter_frames(str(annotated)))) == count
  # Both cameras raised at least one alarm between them (the threshold is their median).
  assert any(json_lines(output_dir / name / "events.jsonl") for name in inputs)


def test_limits_count_per_camera_and_a_failed_input_stops_only_its_camera(model_dir,
                                                                          tmp_path):
  long_input = write_pngs(tmp_path / "long", moving_frames(30))
  short_input = write_pngs(tmp_path / "short", moving_frames(8))
  # --fps=10: 1.2 s of stream time is frames 0..11 of each camera; short ends before.
  output_dir = tmp_path / "limited"
  result = run_detect(f"--model_dir={model_dir}", f"--input={long_input}",
                      f"--input={short_input}", "--fps=10", "--duration_s=1.2",
                      f"--output_dir={output_dir}")
  assert result.returncode == 0, result.stderr
  assert len(csv_rows(output_dir / "long" / "scores.csv")) == 12
  assert len(csv_rows(output_dir / "short" / "scores.csv")) == 8
  assert ("camera long: frames=12 scored=7 alarms=7 events=2 gaps=0 dropped=0 "
          "stop=duration") in result.stderr
  assert ("camera short: frames=8 scored=3 alarms=3 events=2 gaps=0 dropped=0 "
          "stop=end") in result.stderr
  # Threshold 0: one alarm from the first scored frame to the camera's last frame.
  assert [(e["event"], e["frame"]) for e in json_lines(output_dir / "long" / "events.jsonl")] == [
      ("alarm_start", 5), ("alarm_end", 11)]

  empty = tmp_path / "empty"
  empty.mkdir()
  output_dir = tmp_path / "failed"
  result = run_detect(f"--model_dir={model_dir}", f"--input={long_input}", f"--input={empty}",
                      "--max_frames=9", f"--output_dir={output_dir}")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert "camera empty" in result.stderr and "holds no frames" in result.stderr
  # The other camera ran to its own limit, its files complete.
  assert len(csv_rows(output_dir / "long" / "scores.csv")) == 9
  assert ("camera long: frames=9 scored=4 alarms=4 events=2 gaps=0 dropped=0 "
          "stop=max_frames") in result.stderr
  assert (output_dir / "long" / "scores.png").stat().st_size > 0


@pytest.mark.parametrize("kwargs,message", [
    (dict(inputs=("a.avi", "b.avi"), camera_names=("one",)), "1 names for 2 inputs"),
    (dict(inputs=("a.avi", "b.avi"), camera_names=("one", "one")), "unique"),
    (dict(inputs=("x/cam.avi", "y/cam.avi")), r"base names.*--camera_names"),
    (dict(inputs=("a.avi", "b.avi"), camera_name="gate"), "--camera_names"),
    (dict(inputs=("a.avi", "b.avi"), camera_names=("ok", "a/b")), "output folder"),
    (dict(inputs=("a.avi", "b.avi"), camera_names=("ok", "..")), "output folder"),
    (dict(inputs=("a.avi",), camera_names=("",)), "empty"),
    (dict(inputs=()), "--input"),
])
def test_camera_names_are_validated(kwargs, message):
  with pytest.raises(errors.ConfigError, match=message):
    detection.DetectConfig(model_dir="m", output_dir="o", **kwargs)


def test_camera_names_defaults_and_one_input():
  cfg = detection.DetectConfig(model_dir="m", output_dir="o", inputs=["x/gate.avi", "y/hall"])
  assert cfg.inputs == ("x/gate.avi", "y/hall") and cfg.cameras == ("gate", "hall")
  assert cfg.input_path == "x/gate.avi"
  one = detection.DetectConfig(model_dir="m", output_dir="o", inputs="x/gate.avi",
                               camera_name="gate 2")
  assert one.inputs == ("x/gate.avi",) and one.cameras == ("gate 2",)
  # One input keeps the single-camera path (its files directly in output_dir).
  with pytest.raises(errors.ConfigError, match="run_detection runs one input"):
    detection.run_detection(cfg)


def test_detect_cli_camera_names_mismatch_exits_with_one_message(model_dir, tmp_path):
  folder = write_pngs(tmp_path / "video", moving_frames(3))
  result = run_detect(f"--model_dir={model_dir}", f"--input={folder}", f"--input={folder}",
                      "--camera_names=a,b,c", f"--output_dir={tmp_path / 'out'}")
  assert result.returncode == 1
  assert "3 names for 2 inputs" in result.stderr and "Traceback" not in result.stderr
  assert not (tmp_path / "out").exists()


def _drain(reader, stop=None):
  items = []
  while True:
    item = reader.get(stop)
    if isinstance(item, multicamera._End):  # pylint: disable=protected-access
      return items, item
    items.append(item)


def test_file_reader_delivers_every_frame_in_order_then_the_end():
  frames = [(i, i / 10, np.full((2, 2, 1), i, np.uint8)) for i in range(20)]
  reader = multicamera.FrameReader(iter(frames), "file", capacity=2).start()
  time.sleep(0.2)  # A slow consumer: the reader waits for room, it never drops.
  items, end = _drain(reader)
  reader.close()
  assert [item[0] for item in items] == list(range(20)) and end.error is None
  assert reader.dropped == 0


def test_live_reader_keeps_the_newest_frames_and_passes_errors_on():
  produced = threading.Event()

  def camera():
    for i in range(50):
      yield i, i / 25, np.zeros((2, 2, 1), np.uint8)
    produced.set()
    raise video_io.DecodeStopped(50, "rtsp://cam", "connection lost")

  reader = multicamera.FrameReader(camera(), "live", capacity=1, keep_newest=True).start()
  assert produced.wait(10)
  items, end = _drain(reader)
  reader.close()
  # The consumer came late: only the newest frame waited for it, the others were dropped.
  assert [item[0] for item in items] == [49] and reader.dropped == 49
  assert isinstance(end.error, video_io.DecodeStopped) and end.error.index == 50


def test_loop_scores_live_readers_without_waiting_for_each_other(model_dir, tmp_path):
  """keep_newest readers: the loop takes whichever camera has a frame; a stalled camera delays
  no other, and each camera's frames still score as with a detector of its own."""
  from daml_tf.inference import multistream  # pylint: disable=g-import-not-at-top
  release = threading.Event()
  released = []
  fast_frames, slow_frames = moving_frames(12, seed=1), moving_frames(7, seed=2)

  def paced(name, frames, wait=None):
    for i, frame in enumerate(frames):
      # Frame i comes once frame i - 1 is scored: no frame is dropped, whatever the load.
      deadline = time.monotonic() + 30
      while cameras[name].recorder.frames < i and time.monotonic() < deadline:
        time.sleep(0.005)
      if wait is not None and i == 3:
        # Stalls after 3 frames until the fast camera is done (a loop that waited for every
        # camera would wait here until the timeout).
        released.append(wait.wait(30))
      yield i, i / 25, frame

  detector = multistream.MultiStreamDetector.from_model_dir(model_dir, ["fast", "slow"])
  arrived = threading.Event()
  cameras = {}
  for name, frames in (("fast", paced("fast", fast_frames)),
                       ("slow", paced("slow", slow_frames, release))):
    reader = multicamera.FrameReader(frames, name, capacity=1, keep_newest=True,
                                     arrived=arrived)
    recorder = multicamera.CameraRecorder(str(tmp_path / name), name, detector.state(name))
    cameras[name] = multicamera._Camera(name, reader, recorder)  # pylint: disable=protected-access

  def release_when_fast_is_done():
    while cameras["fast"].stop_reason != detection.STOP_END:
      time.sleep(0.01)
    release.set()

  threading.Thread(target=release_when_fast_is_done, daemon=True).start()
  for camera in cameras.values():
    camera.reader.start()
  multicamera.detect_cameras(detector, cameras, arrived=arrived, log_every=0)
  assert released == [True]
  expected = {"fast": fast_frames, "slow": slow_frames}
  for name, camera in cameras.items():
    camera.reader.close()
    summary = camera.recorder.close(camera.stop_reason, 1.0)
    assert summary.stop_reason == detection.STOP_END and camera.reader.dropped == 0
    rows = csv_rows(tmp_path / name / "scores.csv")
    assert [int(r["frame"]) for r in rows] == list(range(len(expected[name])))
    alone = streaming.StreamingDetector.from_model_dir(model_dir)
    reference = [alone.process(frame).score for frame in expected[name]]
    np.testing.assert_allclose(
        np.array([r["score"] for r in rows[5:]], np.float32), reference[5:], rtol=1e-5)


def test_sigterm_stops_every_camera_with_complete_files(model_dir, tmp_path):
  # Long enough that the signal comes well before the end.
  long_video = np.tile(moving_frames(50), (60, 1, 1, 3))
  inputs = [write_video(tmp_path / f"{name}.avi", long_video) for name in ("east", "west")]
  output_dir = tmp_path / "out"
  scores_csv = output_dir / "west" / "scores.csv"
  with testing.detect_process(f"--model_dir={model_dir}",
                              *[f"--input={path}" for path in inputs],
                              f"--output_dir={output_dir}") as process:
    wait_until(lambda: rows_written(scores_csv) > 10, 120, "rows", 0.1, process)
    stderr = testing.sigterm(process)
  assert process.returncode == 0, stderr
  assert "SIGTERM received" in stderr
  assert "camera east:" in stderr and "camera west:" in stderr
  counts = []
  for name in ("east", "west"):
    text = (output_dir / name / "scores.csv").read_text()
    assert text.endswith("\n")
    rows = csv_rows(output_dir / name / "scores.csv")
    counts.append(len(rows))
    assert 10 <= len(rows) < 3000 and f"camera {name}: frames={len(rows)} " in stderr
    assert [int(r["frame"]) for r in rows] == list(range(len(rows)))
    assert [(e["event"], e["frame"]) for e in json_lines(output_dir / name / "events.jsonl")] == [
        ("alarm_start", 5), ("alarm_end", len(rows) - 1)]
    assert (output_dir / name / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # Files are read in lockstep: the cameras stopped at the same step.
  assert counts[0] == counts[1]
  assert "stop=signal" in stderr


def test_a_gap_restarts_only_its_camera(model_dir, tmp_path):
  """A sources.Gap (what a live source yields when its stream came back) resets that camera:
  its open alarm ends at the last frame before the gap, its scores start over."""
  from daml_tf.inference import multistream  # pylint: disable=g-import-not-at-top
  frames = {"steady": moving_frames(16, seed=1), "flaky": moving_frames(16, seed=2)}

  def with_gap(items):
    for index, frame in enumerate(items):
      if index == 10:
        yield sources.Gap(index=10, gap_s=3.0, attempts=1, reason="connection reset")
      yield index, index / 25, frame

  detector = multistream.MultiStreamDetector.from_model_dir(model_dir, list(frames))
  cameras = {}
  for name, items in frames.items():
    source = with_gap(items) if name == "flaky" else ((i, i / 25, f) for i, f in enumerate(items))
    recorder = multicamera.CameraRecorder(str(tmp_path / name), name, detector.state(name))
    cameras[name] = multicamera._Camera(  # pylint: disable=protected-access
        name, multicamera.FrameReader(source, name).start(), recorder)
  multicamera.detect_cameras(detector, cameras, log_every=0)
  for camera in cameras.values():
    camera.reader.close()
    camera.recorder.close(camera.stop_reason, 1.0)
  assert cameras["flaky"].recorder.gaps == 1 and cameras["steady"].recorder.gaps == 0
  flaky = csv_rows(tmp_path / "flaky" / "scores.csv")
  assert [int(r["frame"]) for r in flaky] == list(range(16))
  # Threshold 0: every scored frame alarms; the gap ends the first alarm at frame 9.
  assert [(e["event"], e["frame"]) for e in json_lines(tmp_path / "flaky" / "events.jsonl")] == [
      ("alarm_start", 5), ("alarm_end", 9), ("alarm_start", 15), ("alarm_end", 15)]
  assert [r["score"] == "" for r in flaky] == [True] * 5 + [False] * 5 + [True] * 5 + [False]
  after = streaming.StreamingDetector.from_model_dir(model_dir)
  expected = [after.process(frame).score for frame in frames["flaky"][10:]]
  assert float(flaky[15]["score"]) == pytest.approx(expected[5], rel=1e-5)
  # The other camera never noticed.
  alone = streaming.StreamingDetector.from_model_dir(model_dir)
  expected = [alone.process(frame).score for frame in frames["steady"]]
  np.testing.assert_allclose(
      [float(r["score"]) for r in csv_rows(tmp_path / "steady" / "scores.csv")[5:]],
      expected[5:], rtol=1e-5)


MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if pathlib.Path("/usr/sbin/mosquitto").exists() else None)


def _start_mosquitto(directory):
  """mosquitto on a free 127.0.0.1 port in a child process: (process, port)."""
  port = testing.free_port()
  directory.mkdir()
  conf = directory / "mosquitto.conf"
  # As root mosquitto would switch to user mosquitto; as this user it stays itself.
  conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n")
  process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 20
  while True:
    with socket.socket() as s:
      if s.connect_ex(("127.0.0.1", port)) == 0:
        return process, port
    assert process.poll() is None and time.monotonic() < deadline, "mosquitto did not start"
    time.sleep(0.05)


def _subscribe(port, topic):
  """A paho client collecting (topic, payload) of `topic`: (client, messages)."""
  messages, subscribed = [], threading.Event()
  client = paho.Client(paho.CallbackAPIVersion.VERSION2)
  client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
  client.on_subscribe = lambda *_: subscribed.set()
  client.on_message = lambda c, u, m: messages.append((m.topic, m.payload.decode()))
  client.connect("127.0.0.1", port)
  client.loop_start()
  assert subscribed.wait(20), "no SUBACK"
  return client, messages


@pytest.mark.skipif(MOSQUITTO is None or shutil.which("ffmpeg") is None,
                    reason="needs mosquitto and ffmpeg (`make test` installs them)")
def test_a_live_camera_and_a_file_with_mqtt_events(model_dir, tmp_path):
  """A UDP stream (newest-frame reading) beside a file (every frame), their events on MQTT
  under each camera's topic; the file's end stops only its camera, SIGTERM the stream's."""
  video = testing.write_stream_video(tmp_path / "street.ts", moving_frames(100, rgb=True))
  url = f"udp://127.0.0.1:{testing.free_port(socket.SOCK_DGRAM)}"
  gate = write_pngs(tmp_path / "gate", moving_frames(30, seed=3))
  output_dir = tmp_path / "out"
  broker, port = _start_mosquitto(tmp_path / "broker")
  subscriber, messages = _subscribe(port, "daml/#")
  log_path = tmp_path / "detect.log"
  street_csv = output_dir / "street" / "scores.csv"
  with (testing.Server(lambda: testing.serve_ffmpeg(video, url)), open(log_path, "w") as log,
        testing.detect_process(
            f"--model_dir={model_dir}", f"--input={url}", f"--input={gate}",
            "--camera_names=street,gate", f"--output_dir={output_dir}",
            f"--mqtt=127.0.0.1:{port}/daml", "--read_timeout_s=5", stdout=log,
            stderr=subprocess.STDOUT) as process):
    # The file camera ends long before: 30 frames against the stream's 25 frames/s.
    wait_until(lambda: rows_written(street_csv) > 40, 120, "40 frames of the stream", 0.1,
               process)
    testing.sigterm(process)
  log = log_path.read_text()
  assert process.returncode == 0, log
  assert "camera gate: frames=30 scored=25 alarms=25 events=2 gaps=0 dropped=0 stop=end" in log
  assert "camera street:" in log and "stop=signal" in log
  assert [int(r["frame"]) for r in csv_rows(output_dir / "gate" / "scores.csv")] == list(
      range(30))
  street = [int(r["frame"]) for r in csv_rows(street_csv)]
  assert len(street) > 40 and street == sorted(set(street))
  # Threshold 0: one alarm per camera, from its first scored frame to its last frame; every
  # line of each events.jsonl reached the subscriber under daml/<camera>.
  expected = []
  for name in ("street", "gate"):
    lines = (output_dir / name / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["alarm_start", "alarm_end"]
    expected += [(f"daml/{name}", line) for line in lines]
  deadline = time.monotonic() + 20
  while len(messages) < len(expected) and time.monotonic() < deadline:
    time.sleep(0.05)
  subscriber.disconnect()
  subscriber.loop_stop()
  broker.terminate()
  broker.wait(timeout=20)
  assert sorted(messages) == sorted(expected)
