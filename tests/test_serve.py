"""`python -m daml_tf.serve --config=cameras.yaml` end to end, as a child process: live UDP
cameras sharing a model, alarms with their snapshots and clips, Home Assistant over a real
broker with a password that shows nowhere, SIGTERM and SIGKILL mid-alarm, masks, the
scene-change guard, and bad files that stop it with one line."""

import concurrent.futures
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys

import av
import numpy as np
from PIL import Image
import pytest
import yaml

import testing
from mqtt_testing import Subscriber, needs_broker
from mqtt_testing import broker, subscribers  # pylint: disable=unused-import
from testing import csv_rows, json_lines, wait_until

REPO = testing.REPO
FPS = 10
# camera_frames' background drifts by a phase of t/4: 50 frames turn it by 12.5 rad, within
# 0.07 rad of 2 pi, so the looping stream wraps around without a scene change.
LOOP_FRAMES = 50
FRAME_SIZE = (48, 72)  # Even: H.264's 4:2:0 wants even sizes.
PRE_S = POST_S = 1
ALARM = {"min_frames": 1, "end_ratio": 1.0, "cooldown_s": 0}
CAMERAS = ("gate", "yard")
PASSWORD = "pw-Zq8vT3kLm9xR"
# Frigate's event id: the start time with 6 decimals, '-', 6 of [a-z0-9].
EVENT_ID = re.compile(r"^\d+\.\d{6}-[a-z0-9]{6}$")
HA_COMPONENTS = ("binary_sensor", "sensor", "image", "event")
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                  reason="no ffmpeg CLI (`make test` installs it)")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """An untrained tiny run; every config sets its own threshold."""
  path = tmp_path_factory.mktemp("model")
  testing.make_run(path, {"threshold": 0.5, "quantile": 0.9})
  return str(path)


@pytest.fixture(scope="module")
def stream(model_dir, tmp_path_factory):
  """(the looping camera video, a threshold that its scores cross both ways)."""
  return testing.looping_stream(model_dir, tmp_path_factory.mktemp("stream"), LOOP_FRAMES,
                                FRAME_SIZE, FPS)


def _write_config(path, cameras, output_dir, **sections):
  """Writes a service YAML file: cameras {name: fields}, record.output_dir and `sections`
  (record fields go in `record`)."""
  record = dict(sections.pop("record", {}), output_dir=str(output_dir))
  path.write_text(yaml.safe_dump(dict(cameras=cameras, record=record, **sections),
                                 sort_keys=False))
  return str(path)


def _child_env(**extra):
  env = dict(os.environ, **extra)
  env.pop("DAML_TEST_UNSET", None)
  return env


def _serve(config, log_dir, *flags, env=None):
  """`python -m daml_tf.serve --config=config *flags` in the background, stdout and stderr to
  log_dir/serve.{out,err}: the Popen."""
  with open(log_dir / "serve.out", "w") as out, open(log_dir / "serve.err", "w") as err:
    return subprocess.Popen([sys.executable, "-m", "daml_tf.serve", f"--config={config}",
                             "--log_every=0", *flags], cwd=REPO, env=env or _child_env(),
                            stdout=out, stderr=err, stdin=subprocess.DEVNULL)


def _finish(process, log_dir, timeout=120):
  """Waits for the child; its stderr."""
  try:
    process.wait(timeout=timeout)
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
  return (log_dir / "serve.err").read_text()


def _with_password(broker_):
  """Makes the broker want user svc with PASSWORD (anonymous clients, the subscribers, still
  welcome) and log everything it logs."""
  if shutil.which("mosquitto_passwd") is None:
    pytest.skip("no mosquitto_passwd (it comes with mosquitto)")
  password_file = broker_.directory / "passwords"
  subprocess.run(["mosquitto_passwd", "-b", "-c", str(password_file), "svc", PASSWORD],
                 check=True, capture_output=True)
  with open(broker_.conf, "a") as conf:
    conf.write(f"password_file {password_file}\nlog_type all\n")
  return broker_.start()


def _udp_cameras(video, names, ports=None):
  """{name: (url, ffmpeg sending the looping video there)}; distinct ports (`ports`, or new)."""
  ports = ports or testing.free_ports(len(names), socket.SOCK_DGRAM)
  cameras = {}
  for name, port in zip(names, ports):
    url = f"udp://127.0.0.1:{port}"
    cameras[name] = (url, testing.serve_ffmpeg(video, url, loop=True))
  return cameras


def _mqtt(port):
  return {"host": "127.0.0.1", "port": port, "username": "svc", "password": "${MQTT_PASSWORD}"}


def _retained(port, topics, timeout_s=20):
  """{topic: payload} of the retained messages a new subscriber gets for `topics`."""
  subscriber = Subscriber(port, "daml/#")
  try:
    wait_until(lambda: all(subscriber.messages(t) for t in topics), timeout_s,
               f"retained {topics}")
    return {topic: payload for topic, payload, retain in subscriber.messages() if retain}
  finally:
    subscriber.close()


def _decoded_frames(path):
  with av.open(str(path)) as container:
    return sum(1 for _ in container.decode(video=0))


def _decodes(path):
  with Image.open(path) as image:
    image.load()
    return image.size


def _frames_seen(rows, start, end):
  """The rows of scores.csv (the frames the service handled) from PRE_S before an alarm's
  start to POST_S after its end (events carry epoch times, scores.csv the stream's)."""
  times = {int(row["frame"]): float(row["timestamp_s"]) for row in rows}
  offset = start["start_time"] - times[start["frame"]]
  low = start["start_time"] - offset - PRE_S
  high = end["end_time"] - offset + POST_S
  return sum(1 for t in times.values() if low - 1e-4 <= t <= high + 1e-4)


def _files(root, pattern):
  return sorted(pathlib.Path(root).rglob(pattern))


def _assert_final_files_complete(output_dir):
  """Every clip.mp4 and snapshot under its final name decodes."""
  for clip in _files(output_dir, "clip.mp4"):
    assert _decoded_frames(clip) > 0, clip
  for snapshot in _files(output_dir, "snapshot*.jpg"):
    assert _decodes(snapshot) == (FRAME_SIZE[1], FRAME_SIZE[0]), snapshot


@pytest.mark.slow
@needs_broker
@needs_ffmpeg
def test_two_live_cameras_alarm_with_evidence_on_disk_and_mqtt(model_dir, stream, broker,
                                                               subscribers, tmp_path):
  """The issue's "done means": two UDP cameras on one model, 10 s; alarms with snapshots and
  clips; discovery, availability, alarm and snapshot on MQTT; the password nowhere."""
  video, threshold = stream
  _with_password(broker)
  seen = subscribers(broker.port, "daml/#", "homeassistant/#")
  output_dir = tmp_path / "out"
  senders = _udp_cameras(video, CAMERAS)
  try:
    config = _write_config(
        tmp_path / "cameras.yaml",
        {name: {"input": url, "model_dir": model_dir, "threshold": threshold, "alarm": ALARM}
         for name, (url, _) in senders.items()},
        output_dir, record={"pre_capture_s": PRE_S, "post_capture_s": POST_S},
        mqtt=_mqtt(broker.port))
    process = _serve(config, tmp_path, "--duration_s=10", env=_child_env(MQTT_PASSWORD=PASSWORD))
    stderr = _finish(process, tmp_path)
  finally:
    for _, sender in senders.values():
      testing.stop_server(sender)
  assert process.returncode == 0, stderr[-5000:]

  clip_frames = {name: [] for name in CAMERAS}
  for name in CAMERAS:
    folder = output_dir / name
    records = json_lines(folder / "events.jsonl")
    assert all("id" in r and "event_type" in r for r in records), records
    alarms = [r for r in records if r["event_type"] in ("alarm_start", "alarm_end")]
    starts = [r for r in alarms if r["event_type"] == "alarm_start"]
    assert starts, (name, records, stderr[-5000:])
    assert len(alarms) == 2 * len(starts)  # Every alarm ended (one still open at the exit).
    assert any(r.get("end_reason") == "score" for r in alarms), alarms  # Not only at the exit.
    for record in alarms:
      assert EVENT_ID.match(record["id"]), record
      assert record["has_snapshot"] and record["has_clip"], record
      for key in ("snapshot", "clip"):
        assert not os.path.isabs(record[key]) and (folder / record[key]).is_file(), record
    rows = csv_rows(folder / "scores.csv")
    for start in starts:
      event = folder / "events" / start["id"]
      assert _decodes(event / "snapshot.jpg") == (FRAME_SIZE[1], FRAME_SIZE[0])
      assert _decodes(event / "snapshot-clean.jpg") == (FRAME_SIZE[1], FRAME_SIZE[0])
      end = next(r for r in alarms if r["id"] == start["id"] and r["event_type"] == "alarm_end")
      frames = _decoded_frames(event / "clip.mp4")
      # The clip holds the frames the service saw from pre_capture_s before the start to
      # post_capture_s after the end (a live input drops frames when the loop is busy).
      assert abs(frames - _frames_seen(rows, start, end)) <= 1, (start, end, frames)
      clip_frames[name].append(frames)
    assert not _files(folder, "*.part") and not _files(folder, "*.tmp")

  for name in CAMERAS:
    assert max(clip_frames[name]) >= (PRE_S + POST_S) * FPS, clip_frames

  # Home Assistant: the four entities of each camera, each config valid JSON.
  configs = {topic: json.loads(payload)
             for topic, payload, _ in seen.messages() if topic.startswith("homeassistant/")}
  for name in CAMERAS:
    for component in HA_COMPONENTS:
      mine = [config for topic, config in configs.items()
              if topic.startswith(f"homeassistant/{component}/") and topic.endswith("/config")
              and name in config["device"]["identifiers"][0]]
      assert len(mine) == 1, (name, component, list(configs))
      assert mine[0]["unique_id"] and mine[0]["device"]["identifiers"]
      assert "daml/available" in [a["topic"] for a in mine[0]["availability"]]
  retained = _retained(broker.port, ["daml/available"] + [f"daml/{n}/{what}" for n in CAMERAS
                                                          for what in ("alarm", "snapshot")])
  assert retained["daml/available"] == b"stopped"
  available = seen.payloads("daml/available")
  assert available[0] == b"online" and available[-1] == b"stopped", available
  for name in CAMERAS:
    # The exit ended every open alarm.
    assert retained[f"daml/{name}/alarm"] == b"OFF"
    # The snapshot of the latest alarm's peak, as written last.
    last = [r for r in json_lines(output_dir / name / "events.jsonl")
            if r["event_type"] == "alarm_start"][-1]
    snapshot = output_dir / name / "events" / last["id"] / "snapshot.jpg"
    assert retained[f"daml/{name}/snapshot"] == snapshot.read_bytes()

  # The password went to the broker (which refuses svc without it: the service did connect)
  # and nowhere else.
  broker_log = (broker.directory / "broker.log").read_text()
  assert "u'svc'" in broker_log
  secret = PASSWORD.encode()
  for path in output_dir.rglob("*"):
    if path.is_file():
      assert secret not in path.read_bytes(), path
  assert PASSWORD not in stderr and PASSWORD not in (tmp_path / "serve.out").read_text()
  assert PASSWORD not in broker_log


def _last_event(folder):
  try:
    records = json_lines(folder / "events.jsonl")
  except FileNotFoundError:
    return None
  return records[-1]["event_type"] if records else None


def _serve_live_until_alarm(model_dir, stream, broker_, tmp_path, ready):
  """One UDP camera served until an alarm is open and `ready(folder)` holds: (the service's
  Popen, the camera's sender, the camera's folder)."""
  video, threshold = stream
  broker_.start()
  (url, sender), = _udp_cameras(video, ["gate"]).values()
  output_dir = tmp_path / "out"
  config = _write_config(
      tmp_path / "cameras.yaml",
      {"gate": {"input": url, "model_dir": model_dir, "threshold": threshold, "alarm": ALARM}},
      output_dir, record={"pre_capture_s": PRE_S, "post_capture_s": POST_S},
      mqtt={"host": "127.0.0.1", "port": broker_.port})
  process = _serve(config, tmp_path)
  folder = output_dir / "gate"
  try:
    wait_until(lambda: _last_event(folder) == "alarm_start" and ready(folder), 90,
               "an open alarm", 0.02, process)
  except BaseException:
    process.kill()
    process.wait()
    testing.stop_server(sender)
    raise
  return process, sender, folder


@needs_broker
@needs_ffmpeg
def test_sigterm_mid_alarm_leaves_complete_files_and_stopped(model_dir, stream, broker,
                                                             tmp_path):
  process, sender, folder = _serve_live_until_alarm(model_dir, stream, broker, tmp_path,
                                                    lambda _: True)
  try:
    process.send_signal(signal.SIGTERM)
    stderr = _finish(process, tmp_path, timeout=60)
  finally:
    testing.stop_server(sender)
  assert process.returncode == 0, stderr[-5000:]
  assert _retained(broker.port, ["daml/available"])["daml/available"] == b"stopped"
  records = json_lines(folder / "events.jsonl")
  starts = [r["id"] for r in records if r["event_type"] == "alarm_start"]
  assert starts and starts == [r["id"] for r in records if r["event_type"] == "alarm_end"]
  for event_id in starts:
    assert _decoded_frames(folder / "events" / event_id / "clip.mp4") > 0
  _assert_final_files_complete(folder)
  assert not _files(folder, "*.part") and not _files(folder, "*.tmp")


@needs_broker
@needs_ffmpeg
def test_sigkill_mid_clip_leaves_offline_and_only_complete_final_files(model_dir, stream,
                                                                       broker, tmp_path):
  def clip_recording(folder):
    # A finished clip to check, and the open alarm's clip in progress.
    return _files(folder, "clip.mp4") and _files(folder, "clip.mp4.part")

  process, sender, folder = _serve_live_until_alarm(model_dir, stream, broker, tmp_path,
                                                    clip_recording)
  try:
    assert _retained(broker.port, ["daml/available"])["daml/available"] == b"online"
    process.kill()
    process.wait(timeout=30)
  finally:
    testing.stop_server(sender)
  # The broker publishes the Will of a client whose connection died without a DISCONNECT.
  wait_until(lambda: _retained(broker.port, ["daml/available"])["daml/available"] == b"offline",
             20, "the Last Will")
  _assert_final_files_complete(folder)
  for part in _files(folder, "clip.mp4.part"):
    with av.open(str(part)) as container:  # The fragments written before the kill play.
      list(container.decode(video=0))


# (case, the lines of camera gate (and more cameras), what the one error line says).
BAD_CONFIGS = [
    ("unknown key", "    input: {video}\n    modle_dir: {model_dir}\n",
     "cameras.yaml:4:5: cameras.gate.modle_dir: unknown key (did you mean 'model_dir'?)"),
    ("missing model_dir", "    input: {video}\n",
     "cameras.yaml:3:5: cameras.gate.model_dir: missing"),
    ("odd polygon", "    input: {video}\n    model_dir: {model_dir}\n    masks: ['0,0,1,0,1']\n",
     "cameras.yaml:5:13: cameras.gate.masks[0]: a polygon needs an even number of values, "
     "got 5"),
    ("polygon outside 0-1",
     "    input: {video}\n    model_dir: {model_dir}\n    masks: ['0,0,1.5,0,1,1']\n",
     "cameras.yaml:5:13: cameras.gate.masks[0]: values must lie in 0-1 (relative to the "
     "frame), got 1.5"),
    ("unset variable", "    input: udp://127.0.0.1:${{DAML_TEST_UNSET}}\n"
     "    model_dir: {model_dir}\n",
     "cameras.yaml:3:12: cameras.gate.input: ${DAML_TEST_UNSET} is not set in the environment"),
    ("YAML syntax", "    input: {video}\n    model_dir: [{model_dir}\n",
     # The flow sequence left open runs into the next line, whose ':' YAML stops at.
     "cameras.yaml:5:7: YAML syntax error: while parsing a flow sequence"),
    ("model_dir without a model", "    input: {video}\n    model_dir: {model_dir}\n"
     "  yard:\n    input: {video}\n    model_dir: {empty}\n",
     "cameras.yard.model_dir: cannot open the model"),
]


@pytest.mark.slow
def test_bad_configurations_stop_with_one_line_naming_the_key(model_dir, tmp_path):
  """Each bad file: exit 1, one error line (absl's start with E and the date; TensorFlow's
  own start-up lines with I0000 or W0000) naming the place and key, no traceback."""
  video = testing.write_video(tmp_path / "camera.avi",
                              testing.camera_frames(4, 3, size=FRAME_SIZE))
  (tmp_path / "empty").mkdir()
  configs = {}
  for case, camera, _ in BAD_CONFIGS:
    folder = tmp_path / case.replace(" ", "_")
    folder.mkdir()
    text = "cameras:\n  gate:\n" + camera + f"record:\n  output_dir: {folder / 'out'}\n"
    (folder / "cameras.yaml").write_text(text.format(video=video, model_dir=model_dir,
                                                     empty=tmp_path / "empty"))
    configs[case] = folder / "cameras.yaml"

  def run(case):
    return subprocess.run([sys.executable, "-m", "daml_tf.serve", f"--config={configs[case]}"],
                          cwd=REPO, env=_child_env(), capture_output=True, text=True,
                          timeout=300)

  # Each child spends its seconds importing TensorFlow: two at a time.
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    results = dict(zip(configs, pool.map(run, configs)))
  for case, _, message in BAD_CONFIGS:
    result = results[case]
    errors = [line for line in result.stderr.splitlines() if line.startswith("E")]
    assert result.returncode == 1 and len(errors) == 1, (case, result.stderr[-3000:])
    assert message in errors[0], (case, errors[0])
    assert "Traceback" not in result.stderr, (case, result.stderr[-3000:])
    assert not (configs[case].parent / "out").exists(), case


SCENE_CHANGE_AT = 20
SPAN = 5  # make_run's clip geometry (interval 2, k 3, delta 1): frames before the first score.


@pytest.fixture(scope="module")
def file_cameras(model_dir, tmp_path_factory):
  """One service run over two video files, read in full (threshold 0: any scored frame of an
  unmasked view alarms): `masked` under a mask of the whole frame, `scene` whose frames turn
  100 gray levels brighter at SCENE_CHANGE_AT. (its output folder, its stderr)."""
  folder = tmp_path_factory.mktemp("files")
  frames = testing.camera_frames(2 * SCENE_CHANGE_AT, 3, size=FRAME_SIZE)
  brighter = frames.astype(np.int16)
  brighter[SCENE_CHANGE_AT:] += 100
  videos = {"masked": testing.write_video(folder / "masked.avi", frames[:30]),
            "scene": testing.write_video(folder / "scene.avi",
                                         np.clip(brighter, 0, 255).astype(np.uint8))}
  cameras = {name: {"input": video, "model_dir": model_dir, "threshold": 0.0}
             for name, video in videos.items()}
  cameras["masked"]["masks"] = ["0,0,1,0,1,1,0,1"]
  cameras["scene"]["alarm"] = {"min_frames": 1, "scene_change_fraction": 0.5,
                               "scene_change_delta": 0.15}
  config = _write_config(folder / "cameras.yaml", cameras, folder / "out")
  stderr = _finish(_serve(config, folder), folder)
  assert "stop=end" in stderr and "Traceback" not in stderr, stderr[-5000:]
  return folder / "out", stderr


def test_a_mask_over_the_whole_frame_never_alarms(file_cameras):
  folder = file_cameras[0] / "masked"
  scores = [row["score"] for row in csv_rows(folder / "scores.csv")]
  # The first SPAN frames only fill the model's clip; every other frame scores 0.
  assert len(scores) == 30 and scores[:SPAN] == [""] * SPAN, scores
  assert [float(score) for score in scores[SPAN:]] == [0.0] * (30 - SPAN), scores
  assert json_lines(folder / "events.jsonl") == []
  assert not (folder / "events").exists()


def test_scene_change_is_one_event_at_its_frame(file_cameras):
  output_dir, stderr = file_cameras
  records = json_lines(output_dir / "scene" / "events.jsonl")
  changes = [r for r in records if r["event_type"] == "scene_change"]
  assert [r["frame"] for r in changes] == [SCENE_CHANGE_AT], records
  # The changed frame is not scored (its score compares the new view with the old), and its
  # annotation in the clip says so instead of failing.
  rows = csv_rows(output_dir / "scene" / "scores.csv")
  assert rows[SCENE_CHANGE_AT - 1]["score"] and not rows[SCENE_CHANGE_AT]["score"]
  assert "Annotating the frame" not in stderr, stderr[-5000:]
  # The alarm open before the change ends there; the view after it alarms anew.
  ends = [r for r in records if r["event_type"] == "alarm_end"]
  assert ends[0]["frame"] == SCENE_CHANGE_AT and ends[0]["end_reason"] == "scene_change"


def test_a_camera_down_at_the_start_comes_up_later_while_the_other_runs(model_dir, stream,
                                                                         tmp_path):
  """A live camera that is not streaming when the service starts does not stop it: the other
  camera is scored at once, and the late one from when it starts sending."""
  video, threshold = stream
  # Distinct ports: a late camera on the early one's port would take it from it.
  early_port, late_port = testing.free_ports(2, socket.SOCK_DGRAM)
  (early_url, early_sender), = _udp_cameras(video, ["early"], [early_port]).values()
  late_url = f"udp://127.0.0.1:{late_port}"
  late_sender = None
  output_dir = tmp_path / "out"
  # The late camera's opens give up after 2 s, so it is tried often. The early one keeps the
  # default 10 s: the first model calls are traced while holding the GIL, which on a loaded
  # machine delays its reads by more than 2 s.
  cameras = {name: {"input": url, "model_dir": model_dir, "threshold": threshold, "fps": FPS,
                    "read_timeout_s": timeout, "reconnect_initial_s": 0.5, "reconnect_max_s": 1}
             for name, url, timeout in (("early", early_url, 10), ("late", late_url, 2))}
  config = _write_config(tmp_path / "cameras.yaml", cameras, output_dir, alarm=ALARM)
  service = _serve(config, tmp_path, "--duration_s=6")
  try:
    early_csv = output_dir / "early" / "scores.csv"
    testing.wait_until(lambda: testing.rows_written(str(early_csv)) > 10, 120,
                       "the early camera's first frames", process=service)
    assert testing.rows_written(str(output_dir / "late" / "scores.csv")) == 0
    late_sender = testing.serve_ffmpeg(video, late_url, loop=True)
    stderr = _finish(service, tmp_path)
  finally:
    for sender in (early_sender, late_sender):
      if sender is not None:
        testing.stop_server(sender)
  assert service.returncode == 0, stderr[-3000:]
  assert "Camera late: " in stderr and "Trying again" in stderr
  # Some of its first seconds go to opening and probing the stream.
  assert testing.rows_written(str(output_dir / "late" / "scores.csv")) >= FPS
