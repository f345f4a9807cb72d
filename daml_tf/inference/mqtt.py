"""Alarm events published over MQTT (`detect --mqtt=host:port/topic`): an event sink.

MqttSink publishes every event record (events.AlarmEventWriter) as the same JSON as its
events.jsonl line, on `<topic>/<camera>` (one subtopic per camera, so a subscriber picks
cameras with MQTT wildcards: `<topic>/#` for all of them).

A broker that is down, or goes away, never stops or slows detection: the connection is made
and kept by paho's network thread (connect_async, loop_start), which reconnects with paho's
exponential backoff (RECONNECT_MIN_S doubling up to RECONNECT_MAX_S); `emit` only hands the
message to that thread. With QoS 1 or 2, events published while the broker is unreachable are
queued in memory, up to `queue_size` not yet acknowledged, and sent when the connection comes
back; an event that finds the queue full is dropped, with a warning. With QoS 0 an event
published while disconnected is dropped, with a warning. `close` waits at most
`flush_timeout_s` for the queue to drain, then disconnects; the network thread is then given
STOP_JOIN_S to end (it is a daemon thread, so the process never waits for it beyond that).

Credentials come from the environment (USERNAME_ENV, PASSWORD_ENV), never from a flag, so they
do not show in the process list or a flag file.
"""

import dataclasses
import os
import socket
import threading
import time
from typing import Mapping, Optional, Tuple
import urllib.parse

from absl import logging
from paho.mqtt import client as paho

from daml_tf import errors
from daml_tf import mqtt_common
from daml_tf.inference import events

DEFAULT_PORT = 1883
DEFAULT_QOS = 1
DEFAULT_QUEUE_SIZE = mqtt_common.DEFAULT_QUEUE_SIZE
DEFAULT_FLUSH_TIMEOUT_S = mqtt_common.DEFAULT_FLUSH_TIMEOUT_S
DEFAULT_KEEPALIVE_S = mqtt_common.DEFAULT_KEEPALIVE_S
RECONNECT_MIN_S = mqtt_common.RECONNECT_MIN_S
RECONNECT_MAX_S = mqtt_common.RECONNECT_MAX_S
CONNECT_TIMEOUT_S = mqtt_common.CONNECT_TIMEOUT_S
STOP_JOIN_S = mqtt_common.STOP_JOIN_S
USERNAME_ENV = "DAML_MQTT_USERNAME"
PASSWORD_ENV = "DAML_MQTT_PASSWORD"


@dataclasses.dataclass(frozen=True)
class MqttConfig:
  """Where and how alarm events are published.

  Attributes:
    host, port: the broker.
    topic: the base topic; events go to `<topic>/<camera>`.
    qos: 0 (at most once: dropped while disconnected), 1 (at least once, the default) or 2.
    client_id: the MQTT client id ("" : daml_tf-<hostname>-<pid>).
    queue_size: events kept in memory while the broker does not acknowledge them (QoS >= 1);
      more are dropped.
    flush_timeout_s: at exit, the longest wait for queued events to be acknowledged.
    keepalive_s: MQTT keepalive: a silent broker is noticed after about 1.5 times this.
    username, password: from USERNAME_ENV and PASSWORD_ENV (not shown in repr).
  """

  host: str
  port: int = DEFAULT_PORT
  topic: str = "daml"
  qos: int = DEFAULT_QOS
  client_id: str = ""
  queue_size: int = DEFAULT_QUEUE_SIZE
  flush_timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S
  keepalive_s: int = DEFAULT_KEEPALIVE_S
  username: Optional[str] = dataclasses.field(default=None, repr=False)
  password: Optional[str] = dataclasses.field(default=None, repr=False)

  def __post_init__(self):
    if not self.host:
      raise errors.ConfigError("--mqtt needs a broker host: host[:port]/topic.")
    if not 0 < self.port < 65536:
      raise errors.ConfigError(f"--mqtt: port must be in 1..65535, got {self.port}.")
    if not self.topic or set(self.topic) & set("+#\0"):
      raise errors.ConfigError(
          f"--mqtt: the topic must be non-empty, without wildcards (+, #), got {self.topic!r}.")
    if self.qos not in (0, 1, 2):
      raise errors.ConfigError(f"--mqtt_qos must be 0, 1 or 2, got {self.qos}.")
    if self.queue_size < 1:
      raise errors.ConfigError(f"--mqtt_queue_size must be >= 1, got {self.queue_size}.")
    if self.flush_timeout_s < 0:
      raise errors.ConfigError(
          f"--mqtt_flush_timeout_s must be >= 0, got {self.flush_timeout_s}.")

  @property
  def address(self) -> str:
    return f"{self.host}:{self.port}"


def parse_endpoint(spec: str) -> Tuple[str, int, str]:
  """(host, port, topic) of `host[:port]/topic` (an `mqtt://` prefix is allowed; IPv6 hosts in
  brackets). The port defaults to 1883; the topic may have several levels (`site/cams`).

  Raises:
    errors.ConfigError: no host or topic, a bad port, another scheme, or credentials in it.
  """
  if set(spec) & set("+#?"):
    # Checked here: urllib would read '#' and '?' as the start of a fragment or query.
    raise errors.ConfigError(
        f"--mqtt: the topic cannot hold wildcards (+, #) or '?', got {spec!r}.")
  # urllib parses host, port and IPv6 brackets as any URL; the scheme only makes it one.
  parts = urllib.parse.urlsplit(spec if "://" in spec else "mqtt://" + spec)
  if parts.scheme != "mqtt":
    raise errors.ConfigError(f"--mqtt: only plain mqtt:// is supported, got {spec!r}.")
  if parts.username or parts.password:
    raise errors.ConfigError(f"--mqtt: put credentials in ${USERNAME_ENV} and ${PASSWORD_ENV}, "
                             "not in the address (it shows in the process list).")
  try:
    port = parts.port or DEFAULT_PORT
  except ValueError as e:
    raise errors.ConfigError(f"--mqtt: bad port in {spec!r}: {e}") from e
  topic = parts.path.strip("/")
  if not parts.hostname or not topic:
    raise errors.ConfigError(f"--mqtt must be host[:port]/topic, got {spec!r}.")
  return parts.hostname, port, topic


def config_from_spec(spec: str, qos: int = DEFAULT_QOS, client_id: str = "",
                     queue_size: int = DEFAULT_QUEUE_SIZE,
                     flush_timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S,
                     environ: Mapping[str, str] = os.environ) -> Optional[MqttConfig]:
  """The MqttConfig of `--mqtt` and its companion flags, credentials from `environ`; None when
  spec is empty (no MQTT)."""
  if not spec:
    return None
  host, port, topic = parse_endpoint(spec)
  return MqttConfig(host=host, port=port, topic=topic, qos=qos, client_id=client_id,
                    queue_size=queue_size, flush_timeout_s=flush_timeout_s,
                    username=environ.get(USERNAME_ENV) or None,
                    password=environ.get(PASSWORD_ENV) or None)


topic_level = mqtt_common.topic_level


class _Stats:
  """Counters of the sink, shared by the frame loop and paho's thread (under `lock`)."""

  def __init__(self):
    self.lock = threading.Condition()
    self.published = self.delivered = self.dropped = 0
    # Message ids handed to paho and not yet acknowledged (on_publish), and acknowledgements
    # that came before `emit` saw the id (paho's thread can be that quick).
    self.pending = set()
    self.early = set()

  def sent(self, mid: int) -> None:
    with self.lock:
      self.published += 1
      if mid in self.early:
        self.early.discard(mid)
        self.delivered += 1
      else:
        self.pending.add(mid)

  def acknowledged(self, mid: int) -> None:
    with self.lock:
      if mid in self.pending:
        self.pending.discard(mid)
        self.delivered += 1
        self.lock.notify_all()
      else:
        self.early.add(mid)


class MqttSink:
  """An events.EventSink publishing each record on `<topic>/<camera>` (see the module doc).

  Args:
    cfg: the broker and options.
  """

  def __init__(self, cfg: MqttConfig):
    self.cfg = cfg
    self.stats = _Stats()
    self._closed = False
    self._connected = threading.Event()
    self._ever_connected = False
    self._failures = 0
    self._down_since: Optional[float] = None
    client_id = cfg.client_id or f"daml_tf-{socket.gethostname()}-{os.getpid()}"
    self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                               protocol=paho.MQTTv311)
    self._client.on_connect = self._on_connect
    self._client.on_connect_fail = self._on_connect_fail
    self._client.on_disconnect = self._on_disconnect
    self._client.on_publish = self._on_publish
    # An exception in a callback would otherwise end paho's thread, and with it the reconnection.
    self._client.suppress_exceptions = True
    self._client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
    self._client.max_queued_messages_set(cfg.queue_size)
    self._client.connect_timeout = CONNECT_TIMEOUT_S
    if cfg.username:
      self._client.username_pw_set(cfg.username, cfg.password)
    # The first connection is made by the network thread, like every later one: an
    # unreachable broker costs the frame loop nothing.
    self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
    self._client.loop_start()
    logging.info("MQTT: publishing alarm events to %s on %s/<camera> (QoS %d, client id %s).",
                 cfg.address, cfg.topic, cfg.qos, client_id)

  @property
  def connected(self) -> bool:
    return self._connected.is_set()

  @property
  def connect_failures(self) -> int:
    """Failed connection attempts since the last successful connection."""
    return self._failures

  def wait_connected(self, timeout_s: float) -> bool:
    """Blocks until connected or timeout_s passed (for callers that want to; detection does
    not); True if connected."""
    return self._connected.wait(timeout_s)

  def topic_of(self, camera: str) -> str:
    return f"{self.cfg.topic}/{topic_level(camera)}"

  def emit(self, record: events.Record) -> None:
    """Hands the record to paho's network thread; returns at once, whatever the broker does."""
    if self._closed:
      return
    topic = self.topic_of(str(record.get("camera", "")))
    try:
      info = self._client.publish(topic, events.encode(record), qos=self.cfg.qos)
    except Exception as e:  # pylint: disable=broad-except
      # Whatever paho raises, detection goes on: the event is in events.jsonl.
      self._drop(record, f"publish failed: {e!r}")
      return
    if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
      self._drop(record, f"{self.cfg.queue_size} events already wait for the broker "
                 "(--mqtt_queue_size)")
    elif info.rc == paho.MQTT_ERR_NO_CONN and self.cfg.qos == 0:
      self._drop(record, "not connected (QoS 0 is not queued)")
    else:
      # QoS >= 1 while disconnected: paho keeps the message and sends it on reconnection.
      self.stats.sent(info.mid)

  def _drop(self, record: events.Record, why: str) -> None:
    with self.stats.lock:
      self.stats.dropped += 1
    logging.warning("MQTT: dropped the %s of %s at frame %s: %s.", record.get("event"),
                    record.get("camera"), record.get("frame"), why)

  def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
    del client, userdata, flags, properties
    if reason_code.is_failure:
      logging.error("MQTT: broker %s refused the connection: %s (retrying).", self.cfg.address,
                    reason_code)
      return
    with self.stats.lock:
      waiting = len(self.stats.pending)
    if self._ever_connected:
      logging.info("MQTT: reconnected to %s after %.1f s; %d queued events are being sent.",
                   self.cfg.address, time.monotonic() - (self._down_since or time.monotonic()),
                   waiting)
    else:
      logging.info("MQTT: connected to %s.", self.cfg.address)
    self._ever_connected = True
    self._failures = 0
    self._down_since = None
    self._connected.set()

  def _on_connect_fail(self, client, userdata) -> None:
    del client, userdata
    self._failures += 1
    if self._down_since is None:
      self._down_since = time.monotonic()
    # The first failure of an outage is a warning; the retries (at most one per
    # RECONNECT_MAX_S) are info lines.
    log = logging.warning if self._failures == 1 else logging.info
    log("MQTT: cannot connect to %s (attempt %d); retrying with backoff up to %d s; QoS %d "
        "events %s meanwhile.", self.cfg.address, self._failures, RECONNECT_MAX_S, self.cfg.qos,
        "are dropped" if self.cfg.qos == 0 else f"are queued (up to {self.cfg.queue_size})")

  def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
    del client, userdata, flags, properties
    self._connected.clear()
    if self._closed:
      return
    self._down_since = time.monotonic()
    logging.warning("MQTT: disconnected from %s (%s); reconnecting with backoff up to %d s.",
                    self.cfg.address, reason_code, RECONNECT_MAX_S)

  def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
    del client, userdata, reason_code, properties
    self.stats.acknowledged(mid)

  def flush(self, timeout_s: float) -> bool:
    """Waits at most timeout_s until every event handed to paho is acknowledged; True if so."""
    with self.stats.lock:
      return self.stats.lock.wait_for(lambda: not self.stats.pending, timeout=timeout_s)

  def close(self) -> None:
    """Flushes (at most cfg.flush_timeout_s), disconnects and stops the network thread (at most
    STOP_JOIN_S more); logs what was published, delivered, dropped and left undelivered."""
    if self._closed:
      return
    self.flush(self.cfg.flush_timeout_s)
    self._closed = True
    self._client.disconnect()
    # loop_stop joins paho's thread without a timeout, and that thread may sit in a TCP
    # connect or a backoff sleep: join it from a helper thread, for a bounded time.
    stopper = threading.Thread(target=self._client.loop_stop, daemon=True)
    stopper.start()
    stopper.join(STOP_JOIN_S)
    with self.stats.lock:
      stats = (self.stats.published + self.stats.dropped, self.stats.delivered,
               self.stats.dropped, len(self.stats.pending))
    log = logging.warning if stats[2] or stats[3] else logging.info
    log("MQTT: %d events to %s: %d delivered, %d dropped, %d undelivered at exit.", stats[0],
        self.cfg.address, *stats[1:])
