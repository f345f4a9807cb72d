"""daml_tf.inference.mqtt and `detect --mqtt` against a real mosquitto broker.

Each test starts its own mosquitto on a free 127.0.0.1 port, in a separate process, and a paho
subscriber in the test process. `make test` installs mosquitto when it is missing; without it
the broker tests are skipped.

The broker that is killed and restarted keeps its state in a persistence file (saved every
second) and the subscriber has a persistent session (clean_session=False): after the restart
the broker still holds its subscription and queues for it whatever arrives before the
subscriber is back, so which of the two clients reconnects first does not matter.
"""

import getpass
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import threading
import time
from typing import Optional, Tuple

import numpy as np
import pytest
from paho.mqtt import client as paho

import testing
from mqtt_testing import MOSQUITTO, needs_broker
from testing import rows_written, wait_until
from daml_tf import errors
from daml_tf.data import video_io
from daml_tf.inference import events
from daml_tf.inference import mqtt
from daml_tf.inference import streaming

PERIOD = 40  # Frames of the repeated pattern of the test videos.


class Broker:
  """mosquitto on 127.0.0.1:port in a child process; start again after kill: same port."""

  def __init__(self, directory: pathlib.Path, persistent: bool = False,
               user: Optional[Tuple[str, str]] = None):
    self.port = testing.free_port()
    self.directory = directory
    self.directory.mkdir(parents=True, exist_ok=True)
    lines = [f"listener {self.port} 127.0.0.1",
             # Run as root, mosquitto would become user mosquitto, which cannot write in the
             # test's directory; as this user it stays itself (as another user, no effect).
             f"user {getpass.getuser()}",
             # Unlimited queue per offline subscriber: nothing is lost on the broker's side.
             "max_queued_messages 0"]
    if user:
      passwords = directory / "passwords"
      subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b",
                      "-c", str(passwords), *user], check=True, capture_output=True)
      lines += ["allow_anonymous false", f"password_file {passwords}"]
    else:
      lines.append("allow_anonymous true")
    if persistent:
      lines += ["persistence true", f"persistence_location {directory}/",
                "autosave_interval 1"]
    self.conf = directory / "mosquitto.conf"
    self.conf.write_text("\n".join(lines) + "\n")
    self.process = None
    self.starts = 0

  def start(self):
    self.starts += 1
    log = open(self.directory / f"broker{self.starts}.log", "w")
    self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log,
                                    stderr=subprocess.STDOUT)
    log.close()

    def accepting():
      assert self.process.poll() is None, (self.directory / f"broker{self.starts}.log").read_text()
      with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", self.port)) == 0

    wait_until(accepting, 20, f"mosquitto on port {self.port}")
    return self

  def kill(self, sig=signal.SIGKILL):
    self.process.send_signal(sig)
    self.process.wait(timeout=20)

  def wait_saved(self, since: float):
    """Waits until the persistence file was written after `since` (time.time())."""
    db = self.directory / "mosquitto.db"
    wait_until(lambda: db.exists() and db.stat().st_mtime > since, 20, "the persistence file")

  def errors(self):
    """The error lines of every start's log (a persistence file it could not save, ...)."""
    return [line for log in sorted(self.directory.glob("broker*.log"))
            for line in log.read_text().splitlines() if "Error" in line]

  def close(self):
    if self.process is not None and self.process.poll() is None:
      self.kill(signal.SIGTERM)


class Subscriber:
  """A paho client in the test process that collects (topic, payload) of `topic`.

  Args:
    port: the broker's port.
    client_id: with one, a persistent session (the broker keeps the subscription and queues
      messages while this client is away); without, a clean session.
  """

  def __init__(self, port: int, topic: str = "daml/#", client_id: str = "",
               user: Optional[Tuple[str, str]] = None):
    self.messages = []
    self._lock = threading.Lock()
    self._subscribed = threading.Event()
    self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                              clean_session=not client_id)
    if user:
      self.client.username_pw_set(*user)
    # A persistent session subscribes once: after a broker restart the subscription must come
    # back from the broker's persistence file, not from here.
    self.client.on_connect = lambda c, *_: (
        None if client_id and self._subscribed.is_set() else c.subscribe(topic, qos=1))
    self.client.on_subscribe = lambda *_: self._subscribed.set()
    self.client.on_message = self._on_message
    self.client.reconnect_delay_set(1, 2)
    self.client.connect("127.0.0.1", port)
    self.client.loop_start()
    assert self._subscribed.wait(20), "no SUBACK"

  def _on_message(self, client, userdata, message):
    with self._lock:
      self.messages.append((message.topic, message.payload.decode()))

  def received(self):
    with self._lock:
      return list(self.messages)

  def close(self):
    self.client.disconnect()
    self.client.loop_stop()


@pytest.fixture
def broker_factory(tmp_path):
  brokers = []

  def make(persistent=False, user=None):
    broker = Broker(tmp_path / f"broker{len(brokers)}", persistent, user)
    brokers.append(broker)
    return broker

  yield make
  for broker in brokers:
    broker.close()
  assert not [line for broker in brokers for line in broker.errors()]


@pytest.fixture
def subscribers():
  made = []

  def make(*args, **kwargs):
    made.append(Subscriber(*args, **kwargs))
    return made[-1]

  yield make
  for subscriber in made:
    subscriber.close()


def _record(frame, camera="gate/2", event=events.ALARM_START):
  return {"camera": camera, "event": event, "frame": frame, "timestamp_s": frame / 25,
          "time": events.utc_now_iso(), "score": 1.5, "peak_score": 1.5, "box": [0, 0, 4, 4]}


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize("spec,expected", [
    ("127.0.0.1:1884/daml", ("127.0.0.1", 1884, "daml")),
    ("broker.local/site/cams/", ("broker.local", 1883, "site/cams")),
    ("mqtt://[::1]:1999/daml", ("::1", 1999, "daml")),
])
def test_parse_endpoint(spec, expected):
  assert mqtt.parse_endpoint(spec) == expected


@pytest.mark.parametrize("spec,message", [
    ("127.0.0.1:1883", "host[:port]/topic"),
    (":1883/daml", "host[:port]/topic"),
    ("127.0.0.1:99999/daml", "bad port"),
    ("mqtts://127.0.0.1/daml", "only plain mqtt://"),
    ("user:secret@127.0.0.1/daml", "DAML_MQTT_USERNAME"),
    ("127.0.0.1/daml/#", "wildcards"),
    ("127.0.0.1/daml/+/x", "wildcards"),
])
def test_bad_endpoints_are_config_errors(spec, message):
  with pytest.raises(errors.ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
    mqtt.config_from_spec(spec)


def test_config_from_spec_takes_credentials_from_the_environment_and_hides_them():
  assert mqtt.config_from_spec("") is None
  cfg = mqtt.config_from_spec("127.0.0.1/daml", qos=2, client_id="cam-box",
                              environ={mqtt.USERNAME_ENV: "cam", mqtt.PASSWORD_ENV: "s3cret"})
  assert (cfg.host, cfg.port, cfg.topic, cfg.qos, cfg.client_id) == (
      "127.0.0.1", 1883, "daml", 2, "cam-box")
  assert (cfg.username, cfg.password) == ("cam", "s3cret")
  assert "s3cret" not in repr(cfg) and "cam'" not in repr(cfg)
  with pytest.raises(errors.ConfigError, match="--mqtt_qos"):
    mqtt.config_from_spec("127.0.0.1/daml", qos=3)
  with pytest.raises(errors.ConfigError, match="--mqtt_queue_size"):
    mqtt.config_from_spec("127.0.0.1/daml", queue_size=0)


def test_detect_flags_make_the_mqtt_config():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from daml_tf import detect  # pylint: disable=g-import-not-at-top
  flag_values = flags.FlagValues()
  detect.define_flags(flag_values)
  required = ["detect", "--model_dir=m", "--input=v.avi", "--output_dir=o"]
  flag_values(required)
  assert detect.config_from_flags(flag_values).mqtt is None
  flag_values.unparse_flags()
  flag_values(required + ["--mqtt=10.0.0.5:1884/site/cams", "--mqtt_qos=0",
                          "--mqtt_client_id=box1", "--mqtt_queue_size=50",
                          "--mqtt_flush_timeout_s=0.5"])
  assert detect.config_from_flags(flag_values).mqtt == mqtt.MqttConfig(
      "10.0.0.5", 1884, "site/cams", qos=0, client_id="box1", queue_size=50,
      flush_timeout_s=0.5, username=os.environ.get(mqtt.USERNAME_ENV) or None,
      password=os.environ.get(mqtt.PASSWORD_ENV) or None)
  flag_values.unparse_flags()
  with pytest.raises(flags.IllegalFlagValueError):
    flag_values(required + ["--mqtt_qos=3"])


def test_topic_level_of_camera_names():
  assert [mqtt.topic_level(c) for c in ("gate 2", "a/b", "c+#", "")] == [
      "gate 2", "a_b", "c__", "camera"]


# --- the sink against a broker -----------------------------------------------------------------


@needs_broker
def test_sink_queues_while_the_broker_is_down_bounded_then_delivers(broker_factory,
                                                                    subscribers):
  broker = broker_factory(persistent=True).start()
  subscriber = subscribers(broker.port, client_id="daml-test-queue")
  broker.kill(signal.SIGTERM)  # A clean stop saves the subscriber's session.
  sink = mqtt.MqttSink(mqtt.MqttConfig("127.0.0.1", broker.port, "daml", queue_size=3,
                                       flush_timeout_s=30))
  try:
    wait_until(lambda: sink.connect_failures >= 1, 20, "a failed connection attempt")
    records = [_record(frame) for frame in range(5)]
    start = time.perf_counter()
    for record in records:
      sink.emit(record)
    # Handing over returns at once, broker or not.
    assert time.perf_counter() - start < 0.5
    assert (sink.stats.published, sink.stats.dropped) == (3, 2)
    broker.start()
    assert sink.flush(30), "the queued events were not acknowledged after the restart"
  finally:
    sink.close()
  assert (sink.stats.delivered, len(sink.stats.pending)) == (3, 0)
  wait_until(lambda: len(subscriber.received()) >= 3, 20, "the queued events at the subscriber")
  time.sleep(0.2)
  assert subscriber.received() == [("daml/gate_2", events.encode(r)) for r in records[:3]]


@pytest.mark.parametrize("silent_server", [False, True])
def test_close_returns_in_bounded_time_without_a_broker(silent_server):
  """Nothing listens on the port, or a TCP server accepts and never answers (paho then waits
  for a CONNACK and, after close, for the connection to drop: keepalive, not bounded)."""
  server = socket.socket()
  try:
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    if silent_server:
      server.listen(4)
    else:
      server.close()
    sink = mqtt.MqttSink(mqtt.MqttConfig("127.0.0.1", port, "daml", flush_timeout_s=1.0))
    if not silent_server:
      wait_until(lambda: sink.connect_failures >= 1, 20, "a failed connection attempt")
    sink.emit(_record(0))
    sink.emit(_record(1, event=events.ALARM_END))
    start = time.monotonic()
    sink.close()
    assert time.monotonic() - start < 1.0 + mqtt.STOP_JOIN_S + 0.5
  finally:
    server.close()
  assert not sink.connected
  assert (sink.stats.published, sink.stats.delivered, len(sink.stats.pending)) == (2, 0, 2)
  sink.emit(_record(2))  # After close: ignored, no error.
  assert sink.stats.published == 2


@needs_broker
def test_credentials_from_the_environment(broker_factory, subscribers, caplog):
  broker = broker_factory(user=("cam", "s3cret")).start()
  subscriber = subscribers(broker.port, user=("cam", "s3cret"))
  spec = f"127.0.0.1:{broker.port}/daml"
  record = _record(7, camera="gate")
  sink = mqtt.MqttSink(mqtt.config_from_spec(
      spec, environ={mqtt.USERNAME_ENV: "cam", mqtt.PASSWORD_ENV: "s3cret"}))
  try:
    assert sink.wait_connected(20)
    sink.emit(record)
    assert sink.flush(20)
  finally:
    sink.close()
  wait_until(subscriber.received, 20, "the event at the subscriber")
  assert subscriber.received() == [("daml/gate", events.encode(record))]
  # A wrong password: refused, logged, nothing delivered, and close is still bounded.
  sink = mqtt.MqttSink(mqtt.config_from_spec(
      spec, flush_timeout_s=1.0,
      environ={mqtt.USERNAME_ENV: "cam", mqtt.PASSWORD_ENV: "wrong"}))
  wait_until(lambda: "refused the connection" in caplog.text, 20, "the refusal in the log")
  sink.emit(_record(8, camera="gate"))
  start = time.monotonic()
  sink.close()
  assert time.monotonic() - start < 1.0 + mqtt.STOP_JOIN_S + 0.5
  assert sink.stats.delivered == 0 and len(subscriber.received()) == 1


def test_qos0_drops_while_disconnected():
  port = testing.free_port()
  sink = mqtt.MqttSink(mqtt.MqttConfig("127.0.0.1", port, "daml", qos=0, flush_timeout_s=5))
  try:
    wait_until(lambda: sink.connect_failures >= 1, 20, "a failed connection attempt")
    sink.emit(_record(0))
    assert (sink.stats.published, sink.stats.dropped) == (0, 1)
  finally:
    sink.close()


# --- detect --mqtt -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_and_threshold(tmp_path_factory):
  """A tiny untrained run, and a threshold that the repeated pattern of the test videos (PERIOD
  frames of moving_frames) crosses once per period: halfway between its two highest scores."""
  root = tmp_path_factory.mktemp("mqtt_model")
  model_dir = root / "model"
  testing.make_run(model_dir, {"threshold": 1e9, "quantile": 0.9})
  video = _periodic_video(root / "probe.avi", 3)
  detector = streaming.StreamingDetector.from_model_dir(str(model_dir))
  scores = [detector.process(frame).score for _, _, frame in video_io.iter_frames(video)]
  top = np.sort(np.array(scores[PERIOD:2 * PERIOD], np.float64))
  return str(model_dir), float((top[-1] + top[-2]) / 2)


def _periodic_video(path, periods):
  return testing.write_video(path, np.tile(testing.moving_frames(PERIOD), (periods, 1, 1, 3)))


def _detect_args(model_dir, threshold, video, output_dir, port, *extra):
  return [f"--model_dir={model_dir}", f"--input={video}", f"--output_dir={output_dir}",
          f"--threshold={threshold!r}", f"--mqtt=127.0.0.1:{port}/daml", "--log_every=1000",
          *extra]


def _lines(path):
  with open(path) as f:
    return f.read().splitlines()


@needs_broker
def test_detect_publishes_the_lines_of_events_jsonl(model_and_threshold, broker_factory,
                                                    subscribers, tmp_path):
  model_dir, threshold = model_and_threshold
  broker = broker_factory().start()
  subscriber = subscribers(broker.port)
  video = _periodic_video(tmp_path / "in.avi", 6)
  result = testing.run_detect(*_detect_args(model_dir, threshold, video, tmp_path / "out",
                                             broker.port, "--camera_name=gate 2"))
  assert result.returncode == 0, result.stderr
  lines = _lines(tmp_path / "out" / events.EVENTS_FILE)
  # One alarm per period after the first: its start and end.
  assert len(lines) >= 8 and len(lines) % 2 == 0
  assert "0 dropped, 0 undelivered at exit" in result.stderr
  wait_until(lambda: len(subscriber.received()) >= len(lines), 20, "every event at the subscriber")
  time.sleep(0.2)
  assert subscriber.received() == [("daml/gate 2", line) for line in lines]
  assert json.loads(lines[0])["camera"] == "gate 2"


def test_detect_without_a_broker_completes(model_and_threshold, tmp_path):
  model_dir, threshold = model_and_threshold
  video = _periodic_video(tmp_path / "in.avi", 4)
  result = testing.run_detect(*_detect_args(model_dir, threshold, video, tmp_path / "out",
                                             testing.free_port(), "--mqtt_flush_timeout_s=1"))
  assert result.returncode == 0, result.stderr
  lines = _lines(tmp_path / "out" / events.EVENTS_FILE)
  assert len(lines) >= 4
  assert "frames=160 scored=" in result.stderr
  assert "MQTT: cannot connect to 127.0.0.1" in result.stderr
  assert f"MQTT: {len(lines)} events to 127.0.0.1" in result.stderr
  assert f"0 delivered, 0 dropped, {len(lines)} undelivered at exit" in result.stderr


@needs_broker
@pytest.mark.slow
def test_detect_goes_on_while_the_broker_is_killed_and_restarted(model_and_threshold,
                                                                broker_factory, subscribers,
                                                                tmp_path):
  model_dir, threshold = model_and_threshold
  broker = broker_factory(persistent=True).start()
  subscriber = subscribers(broker.port, client_id="daml-test-restart")
  subscribed_at = time.time()
  # Long enough to outlast the test at any speed: SIGTERM ends it.
  video = _periodic_video(tmp_path / "long.avi", 500)
  output_dir = tmp_path / "out"
  scores_csv = output_dir / "scores.csv"
  with testing.detect_process(*_detect_args(model_dir, threshold, video, output_dir,
                                            broker.port, "--camera_name=gate")) as process:
    wait_until(lambda: len(subscriber.received()) >= 4 and process.poll() is None, 120,
               "the first events")
    # SIGKILL loses what the broker did not save: let it save the subscriber's session first.
    broker.wait_saved(subscribed_at)
    broker.kill()
    # Every event of a frame from here on was emitted after the broker died.
    rows_after_kill = rows_written(scores_csv)
    wait_until(lambda: rows_written(scores_csv) >= rows_after_kill + 4 * PERIOD, 60,
               "frames scored while the broker is down")
    time.sleep(2.0)
    assert process.poll() is None, "detection stopped while the broker was down"
    rows_before_restart = rows_written(scores_csv)
    assert rows_before_restart > rows_after_kill + 4 * PERIOD
    broker.start()

    def after_restart():
      return any(json.loads(payload)["frame"] >= rows_before_restart + 2 * PERIOD
                 for _, payload in subscriber.received())

    wait_until(after_restart, 90, "events of frames after the restart")
    assert process.poll() is None
    stderr = testing.sigterm(process)
  assert process.returncode == 0, stderr
  assert "stop=signal" in stderr
  assert "MQTT: disconnected from" in stderr and "MQTT: reconnected to" in stderr
  lines = _lines(output_dir / events.EVENTS_FILE)
  frames = [json.loads(line)["frame"] for line in lines]
  # Events while the broker was down were queued and sent after the restart; so were later
  # ones. QoS 1 may deliver a message twice: compare as sets.
  expected = {line for line, frame in zip(lines, frames) if frame >= rows_after_kill}
  assert any(rows_after_kill <= f < rows_before_restart for f in frames)
  assert any(f >= rows_before_restart for f in frames)
  wait_until(lambda: expected <= {p for _, p in subscriber.received()}, 20,
             "every event emitted after the kill at the subscriber")
  received = subscriber.received()
  # Shown on failure: where the outage fell and what arrived.
  print(f"events={len(lines)} after kill={len(expected)} rows: after kill {rows_after_kill}, "
        f"before restart {rows_before_restart}, at exit {rows_written(scores_csv)}; "
        f"received={len(received)} distinct={len({p for _, p in received})}")
  assert {p for _, p in received} <= set(lines) and {t for t, _ in received} == {"daml/gate"}
  assert ", 0 dropped, 0 undelivered at exit" in stderr
