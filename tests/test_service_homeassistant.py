"""daml_tf.service.homeassistant against a real mosquitto broker on 127.0.0.1.

Each test that needs a broker starts its own mosquitto on a free port (the broker of
test_mqtt.py, cut to what these tests use; that module is not imported because it loads
TensorFlow) and paho subscribers in the test process. Without the mosquitto binary the broker
tests are skipped. The service that is killed or stopped runs in a child Python (_CHILD).
"""

import getpass
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from paho.mqtt import client as paho

from daml_tf import errors
from daml_tf.service import homeassistant as ha
from mqtt_testing import broker, free_port, needs_broker, subscribers, wait_until  # pylint: disable=unused-import

REPO = pathlib.Path(__file__).resolve().parents[1]
CAMERAS = ["gate", "Back yard/2"]
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\xff\xd9"


def retained(port, topic, subscribers, timeout_s=10):
  """The retained payload a new subscriber of `topic` gets."""
  late = subscribers(port, topic)
  wait_until(lambda: late.messages(topic), timeout_s, f"the retained message of {topic}")
  (_, payload, was_retained), = late.messages(topic)[:1]
  assert was_retained
  return payload


class FakeClock:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def _service(port, clock=None, **kwargs):
  return ha.ServiceMqtt("127.0.0.1", port, "daml", CAMERAS, client_id="daml-test",
                        clock=clock or time.monotonic,
                        device_info={"model": "DAML d4", "sw_version": "0.1.0"}, **kwargs)


def _configs(subscriber):
  return {topic: json.loads(payload) for topic, payload, _ in subscriber.messages()
          if topic.startswith("homeassistant/") and topic.endswith("/config")}


# --- without a broker ------------------------------------------------------------------------


def test_topics_and_discovery_configs():
  service = ha.ServiceMqtt("127.0.0.1", free_port(), "daml/", CAMERAS, client_id="x",
                           flush_timeout_s=0.5)
  try:
    assert service.topic("Back yard/2", "alarm") == "daml/Back yard_2/alarm"
    with pytest.raises(ValueError, match="Unknown camera"):
      service.topic("nope", "alarm")
    configs = service.discovery_configs()
  finally:
    service.close()
  assert sorted(configs) == sorted(
      f"homeassistant/{component}/daml_tf_{camera}_{what}/config"
      for camera in ("gate", "back_yard_2")
      for component, what in (("binary_sensor", "alarm"), ("sensor", "score"),
                              ("image", "snapshot"), ("event", "alarm_event")))
  alarm = configs["homeassistant/binary_sensor/daml_tf_back_yard_2_alarm/config"]
  assert alarm["state_topic"] == "daml/Back yard_2/alarm"
  assert (alarm["payload_on"], alarm["payload_off"]) == ("ON", "OFF")
  assert alarm["default_entity_id"] == "binary_sensor.daml_tf_back_yard_2_alarm"
  assert alarm["device"] == {"identifiers": ["daml_tf_back_yard_2"], "name": "Back yard/2",
                             "manufacturer": "daml_tf", "model": ha.DEFAULT_MODEL}
  assert alarm["availability_mode"] == "all"
  assert [a["topic"] for a in alarm["availability"]] == ["daml/available",
                                                         "daml/Back yard_2/status"]


def test_without_discovery():
  service = ha.ServiceMqtt("127.0.0.1", free_port(), "daml", ["gate"], discovery_prefix=None,
                           flush_timeout_s=0.5)
  try:
    assert service.discovery_configs() == {}
    assert service.ha_status_topic is None
  finally:
    service.close()


def test_camera_names_must_give_distinct_topics_and_ids():
  with pytest.raises(errors.ConfigError, match="same MQTT topic level"):
    ha.ServiceMqtt("127.0.0.1", 1, "daml", ["a/b", "a_b"], client_id="x")
  with pytest.raises(errors.ConfigError, match="same MQTT object id"):
    ha.ServiceMqtt("127.0.0.1", 1, "daml", ["Gate", "gate"], client_id="x")
  with pytest.raises(errors.ConfigError, match="wildcards"):
    ha.ServiceMqtt("127.0.0.1", 1, "daml/#", ["gate"], client_id="x")


def test_the_module_does_not_import_tensorflow():
  code = ("import sys; import daml_tf.service.homeassistant; "
          "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr


# --- against a broker ------------------------------------------------------------------------


@needs_broker
def test_discovery_availability_states_scores_and_events(broker, subscribers):
  broker.start()
  watcher = subscribers(broker.port, "daml/#", "homeassistant/#")
  clock = FakeClock()
  service = _service(broker.port, clock)
  try:
    assert service.wait_connected(20)
    wait_until(lambda: watcher.payloads("daml/available") == [b"online"], 20, "online")
    # Discovery: 4 entities per camera, retained, each tied to its camera's device.
    wait_until(lambda: len(_configs(watcher)) == 8, 20, "the discovery configs")
    configs = _configs(watcher)
    # Retained (a subscriber already there gets them without the retain flag: ask a new one).
    late = subscribers(broker.port, "homeassistant/+/+/config")
    wait_until(lambda: len(late.messages()) == 8, 20, "the retained discovery configs")
    assert all(was_retained for _, _, was_retained in late.messages())
    assert _configs(late) == configs
    assert len({c["unique_id"] for c in configs.values()}) == 8
    for topic, config in configs.items():
      component, object_id = topic.split("/")[1:3]
      assert config["unique_id"] == config["object_id"] == object_id
      camera = "gate" if "_gate_" in object_id else "Back yard/2"
      level = camera.replace("/", "_")
      assert config["device"]["identifiers"] == [f"daml_tf_{ha.object_id_part(camera)}"]
      assert config["device"]["manufacturer"] == "daml_tf"
      assert config["device"]["model"] == "DAML d4"
      assert config["availability"] == [
          {"topic": "daml/available", "payload_available": "online",
           "payload_not_available": "offline",
           "value_template": "{{ 'online' if value == 'online' else 'offline' }}"},
          {"topic": f"daml/{level}/status", "payload_available": "online",
           "payload_not_available": "offline"}]
      assert config["availability_mode"] == "all"
      expected = {"binary_sensor": ("state_topic", "alarm"), "sensor": ("state_topic", "score"),
                  "image": ("image_topic", "snapshot"), "event": ("state_topic", "events")}
      key, what = expected[component]
      assert config[key] == f"daml/{level}/{what}"
      if component == "sensor":
        assert config["state_class"] == "measurement"
      if component == "image":
        assert config["content_type"] == "image/jpeg"
      if component == "event":
        assert config["event_types"] == ["alarm_start", "alarm_end"]
        assert "value_json.event" in config["value_template"]

    # Retained states: a late subscriber gets the latest.
    service.publish_status("gate", True)
    service.publish_alarm("gate", True)
    service.publish_alarm("gate", False)
    assert service.flush(20)
    assert retained(broker.port, "daml/gate/alarm", subscribers) == b"OFF"
    service.publish_alarm("gate", True)
    assert service.flush(20)
    assert retained(broker.port, "daml/gate/alarm", subscribers) == b"ON"
    assert retained(broker.port, "daml/gate/status", subscribers) == b"online"
    service.publish_snapshot("gate", JPEG)
    assert service.flush(20)
    assert retained(broker.port, "daml/gate/snapshot", subscribers) == JPEG

    # Scores: at most one a second per camera (the fake clock), unless forced.
    published = []
    for dt, score, force in ((0, 0.5, False), (0.5, 0.6, False), (0.49, 0.7, False),
                             (0.01, 0.8, False), (0.2, 0.9, True), (0, 1.0, False)):
      clock.now += dt
      published.append(service.publish_score("gate", score, force=force))
    assert service.publish_score("Back yard/2", 0.25)  # Its own limit.
    assert not service.publish_score("gate", None)
    assert published == [True, False, False, True, True, False]
    wait_until(lambda: len(watcher.messages("daml/gate/score")) == 3, 20, "the scores")
    time.sleep(0.2)
    assert watcher.payloads("daml/gate/score") == [b"0.5", b"0.8", b"0.9"]
    assert watcher.payloads("daml/Back yard_2/score") == [b"0.25"]
    assert service.stats()["scores_rate_limited"] == 3

    # Events: to the camera's topic and the global one, not retained.
    record = {"camera": "gate", "event": "alarm_start", "frame": 7, "score": 1.5}
    service.emit(record)
    service.publish_event("Back yard/2", json.dumps(dict(record, camera="Back yard/2")))
    service.emit(dict(record, camera="elsewhere"))  # Not one of its cameras: dropped.
    assert service.flush(20)
    wait_until(lambda: len(watcher.messages("daml/events")) == 2, 20, "the events")
    assert [json.loads(p) for p in watcher.payloads("daml/gate/events")] == [record]
    assert [json.loads(p)["camera"] for p in watcher.payloads("daml/events")] == [
        "gate", "Back yard/2"]
    assert not any(r for t, _, r in watcher.messages() if t.endswith("events"))

    # Home Assistant restarts: its birth message brings the discovery and the states again.
    watcher.clear()
    before = service.stats()["discoveries"]
    watcher.publish("homeassistant/status", "online")
    wait_until(lambda: len(_configs(watcher)) == 8, 20, "the discovery after HA's birth")
    wait_until(lambda: watcher.payloads("daml/gate/snapshot") == [JPEG], 20, "the states")
    assert watcher.payloads("daml/gate/alarm") == [b"ON"]
    assert watcher.payloads("daml/gate/status") == [b"online"]
    assert service.stats()["discoveries"] == before + 1
    watcher.publish("homeassistant/status", "offline")  # HA's Will: nothing to do.
    time.sleep(0.3)
    assert service.stats()["discoveries"] == before + 1
  finally:
    service.close()
  stats = service.stats()
  assert (stats["dropped"], stats["pending"], stats["connected"]) == (1, 0, False)
  assert retained(broker.port, "daml/available", subscribers) == b"stopped"


@needs_broker
def test_states_set_while_disconnected_are_published_on_connection(broker, subscribers):
  service = _service(broker.port)
  try:
    service.publish_status("gate", True)
    service.publish_alarm("gate", True)
    service.publish_snapshot("gate", JPEG)
    assert not service.publish_score("gate", 3.0)
    assert service.stats()["held_offline"] == 3
    broker.start()
    assert service.wait_connected(30)
    assert retained(broker.port, "daml/available", subscribers) == b"online"
    assert retained(broker.port, "daml/gate/alarm", subscribers) == b"ON"
    assert retained(broker.port, "daml/gate/snapshot", subscribers) == JPEG
    assert retained(broker.port, "daml/gate/status", subscribers) == b"online"
  finally:
    service.close()


# The child of the process tests: connects, says "ready", and on SIGTERM closes cleanly.
_CHILD = """
import signal, sys, time
from daml_tf.service import homeassistant as ha

service = ha.ServiceMqtt("127.0.0.1", int(sys.argv[1]), "daml", ["gate"],
                         client_id="daml-child", keepalive_s=2)

def stop(signum, frame):
  service.close()
  sys.exit(0)

signal.signal(signal.SIGTERM, stop)
assert service.wait_connected(20)
service.publish_status("gate", True)
print("ready", flush=True)
while True:
  time.sleep(0.1)
"""


def _child(port):
  child = subprocess.Popen([sys.executable, "-c", _CHILD, str(port)], cwd=REPO,
                           env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  line = child.stdout.readline()
  if line.strip() != "ready":
    child.kill()
    pytest.fail(f"the child did not start: {child.communicate()[1]}")
  return child


def _time_to(watcher, payload, since, timeout_s=20):
  wait_until(lambda: watcher.payloads("daml/available")[-1:] == [payload], timeout_s,
             f"{payload!r} on daml/available")
  return time.monotonic() - since


@needs_broker
@pytest.mark.parametrize("how", ["sigkill", "sigstop"])
def test_a_dead_or_hung_process_leaves_offline(broker, subscribers, how):
  """SIGKILL: the kernel closes the socket and the broker sends the Will at once. SIGSTOP (a
  hung process, or a network cut): the socket stays open and the broker sends the Will when
  the keepalive (2 s here) runs out, after 1.5 times it."""
  broker.start()
  watcher = subscribers(broker.port, "daml/available")
  child = _child(broker.port)
  try:
    wait_until(lambda: watcher.payloads("daml/available")[-1:] == [b"online"], 20, "online")
    start = time.monotonic()
    child.send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGSTOP)
    elapsed = _time_to(watcher, b"offline", start)
  finally:
    child.kill()
    child.wait(timeout=20)
  print(f"{how}: offline after {elapsed:.2f} s")
  # mosquitto 2.0 checks the keepalive in whole seconds: about 5 s (not 3) for 2 s.
  assert 2.0 <= elapsed < 10.0 if how == "sigstop" else elapsed < 1.0
  assert retained(broker.port, "daml/available", subscribers) == b"offline"


@needs_broker
def test_sigterm_and_close_leave_stopped(broker, subscribers):
  broker.start()
  watcher = subscribers(broker.port, "daml/available")
  child = _child(broker.port)
  try:
    wait_until(lambda: watcher.payloads("daml/available")[-1:] == [b"online"], 20, "online")
    start = time.monotonic()
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=20) == 0, child.stderr.read()
    elapsed = _time_to(watcher, b"stopped", start)
  finally:
    if child.poll() is None:
      child.kill()
      child.wait()
  print(f"sigterm: stopped after {elapsed:.2f} s")
  # A clean DISCONNECT: the broker drops the Will, so no `offline` follows, even after the
  # keepalive.
  time.sleep(3.5)
  assert watcher.payloads("daml/available")[-2:] == [b"online", b"stopped"]
  assert retained(broker.port, "daml/available", subscribers) == b"stopped"
