"""A real mosquitto broker on 127.0.0.1 and paho subscribers, for the MQTT tests.

Imports no TensorFlow, so TensorFlow-free modules are tested without loading it. Without the
mosquitto binary the tests that need it skip, saying why (`make test` installs it).
"""

import getpass
import os
import pathlib
import shutil
import socket
import subprocess
import threading
import time

from paho.mqtt import client as paho
import pytest

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
    None)
needs_broker = pytest.mark.skipif(
    MOSQUITTO is None, reason="no mosquitto broker binary (`make test` installs it: "
    "apt-get install -y mosquitto)")
def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def wait_until(condition, timeout_s, what, poll_s=0.01):
  deadline = time.monotonic() + timeout_s
  while not condition():
    assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
    time.sleep(poll_s)


class Broker:
  """mosquitto on 127.0.0.1:port in a child process."""

  def __init__(self, directory: pathlib.Path):
    self.port = free_port()
    self.directory = directory
    directory.mkdir(parents=True, exist_ok=True)
    self.conf = directory / "mosquitto.conf"
    # As root, mosquitto would become user mosquitto; as this user it stays itself.
    self.conf.write_text(f"listener {self.port} 127.0.0.1\nuser {getpass.getuser()}\n"
                         "allow_anonymous true\n")
    self.process = None

  def start(self):
    with open(self.directory / "broker.log", "w") as log:
      self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log,
                                      stderr=subprocess.STDOUT)

    def accepting():
      assert self.process.poll() is None, (self.directory / "broker.log").read_text()
      with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", self.port)) == 0

    wait_until(accepting, 20, f"mosquitto on port {self.port}")
    return self

  def close(self):
    if self.process is not None and self.process.poll() is None:
      self.process.terminate()
      self.process.wait(timeout=20)


class Subscriber:
  """A paho client collecting (topic, payload bytes, retain) of `topics`."""

  def __init__(self, port: int, *topics: str):
    self._lock = threading.Lock()
    self._messages = []
    subscribed = threading.Event()
    self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    self.client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
    self.client.on_subscribe = lambda *_: subscribed.set()
    self.client.on_message = self._on_message
    self.client.connect("127.0.0.1", port)
    self.client.loop_start()
    assert subscribed.wait(20), "no SUBACK"

  def _on_message(self, client, userdata, message):
    with self._lock:
      self._messages.append((message.topic, message.payload, bool(message.retain)))

  def messages(self, topic=None):
    with self._lock:
      return [m for m in self._messages if topic is None or m[0] == topic]

  def payloads(self, topic):
    return [payload for _, payload, _ in self.messages(topic)]

  def clear(self):
    with self._lock:
      self._messages.clear()

  def publish(self, topic, payload, retain=False):
    self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(20)

  def close(self):
    self.client.disconnect()
    self.client.loop_stop()


@pytest.fixture
def broker(tmp_path):
  made = Broker(tmp_path / "broker")
  yield made
  made.close()


@pytest.fixture
def subscribers():
  made = []

  def make(port, *topics):
    made.append(Subscriber(port, *topics))
    return made[-1]

  yield make
  for subscriber in made:
    subscriber.close()


