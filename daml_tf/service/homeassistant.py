"""The camera service over MQTT for Home Assistant: availability, each camera's alarm, score,
snapshot, stream status and events, and MQTT discovery so that Home Assistant (HA) makes the
entities itself. Topics follow Frigate's shapes under a prefix (`daml` here, `frigate` there):

  <prefix>/available          online | offline (the Last Will) | stopped (clean exit)  retained
  <prefix>/<camera>/alarm     ON | OFF                                                 retained
  <prefix>/<camera>/snapshot  the JPEG of the alarm's peak                             retained
  <prefix>/<camera>/score     the anomaly score, at most once per score_interval_s, QoS 0
  <prefix>/<camera>/status    online | offline: the camera's stream                    retained
  <prefix>/<camera>/events    the event records (alarm_start, alarm_end) as JSON
  <prefix>/events             the same records, every camera's (Frigate's global topic)

`<camera>` is the camera's name as one topic level ('/', '+', '#' become '_', as in
inference.mqtt.topic_level).

Discovery (unless discovery_prefix is None): for each camera, four retained configs
`<discovery_prefix>/<component>/<object_id>/config`, one device per camera (identifiers
[f"{node_id}_{camera}"]):
  binary_sensor  the alarm (ON / OFF), device_class alarm_device_class ("problem");
  sensor         the score (state_class measurement);
  image          the snapshot (image/jpeg);
  event          the camera's events topic; HA accepts only the records whose `event` is one
                 of `event_types` (alarm_start, alarm_end unless told otherwise) and logs a
                 warning for any other (publish alarm_update or scene_change records there
                 only with event_types naming them).
Every entity is available when both the service and the camera's stream are (availability_mode
"all" over `<prefix>/available`, where anything but "online" reads as unavailable, and
`<prefix>/<camera>/status`). So a camera's entities are unavailable until the service calls
publish_status(camera, True) for it: call it when its stream delivers frames.

Connection, as inference.mqtt.MqttSink: paho's network thread (connect_async, loop_start)
connects and reconnects with backoff; no call here waits for the broker. On every connection
this client publishes `online`, the discovery configs and the current retained states (a broker
restarted without persistence has lost them), and subscribes to `<discovery_prefix>/status`:
HA's birth message `online` there (HA restarted) brings the configs and states again.

While disconnected: events are queued by paho (QoS >= 1), at most `queue_size` messages in all
(more are dropped and counted); alarm, snapshot and status only update the state that the next
connection publishes (no stale copies in the queue, no JPEGs piling up in memory); scores are
not sent.

Locks: paho calls on_publish holding its outgoing-message lock, which `publish` takes; so
on_publish takes only the delivery counters' lock, never held around a `publish`. on_connect
and on_message are called holding only paho's callback lock, which `publish` does not take;
still, they do no more than publish `online` and wake a thread of this class, which
republishes the discovery and the states (many messages, under the state lock).

Nothing here imports TensorFlow; event records are published as json.dumps(record), which is
what inference.events.encode does (give the encoded string to publish exactly its bytes).
"""

import json
import os
import re
import socket
import threading
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

from absl import logging
from paho.mqtt import client as paho

from daml_tf import errors
from daml_tf import mqtt_common

ONLINE = "online"
OFFLINE = "offline"
STOPPED = "stopped"
ALARM_ON = "ON"
ALARM_OFF = "OFF"
EVENT_TYPES = ("alarm_start", "alarm_end")
MANUFACTURER = "daml_tf"
DEFAULT_MODEL = "video anomaly detector"
DEFAULT_KEEPALIVE_S = mqtt_common.DEFAULT_KEEPALIVE_S
DEFAULT_QUEUE_SIZE = mqtt_common.DEFAULT_QUEUE_SIZE
DEFAULT_FLUSH_TIMEOUT_S = mqtt_common.DEFAULT_FLUSH_TIMEOUT_S
DEFAULT_SCORE_INTERVAL_S = 1.0
RECONNECT_MIN_S = mqtt_common.RECONNECT_MIN_S
RECONNECT_MAX_S = mqtt_common.RECONNECT_MAX_S
CONNECT_TIMEOUT_S = mqtt_common.CONNECT_TIMEOUT_S
STOP_JOIN_S = mqtt_common.STOP_JOIN_S
# HA reads the service's availability through this, so that `stopped` (a clean exit) and the
# Will's `offline` both make the entities unavailable (a payload that is neither
# payload_available nor payload_not_available would leave them as they were).
_AVAILABILITY_TEMPLATE = "{{ 'online' if value == 'online' else 'offline' }}"
# HA's event entity wants a JSON object with event_type; the records call it `event`.
_EVENT_TEMPLATE = '{"event_type": "{{ value_json.event }}"}'
_ID_UNSAFE = re.compile(r"[^a-z0-9_-]+")

Record = Mapping[str, Any]


topic_level = mqtt_common.topic_level


def object_id_part(name: str) -> str:
  """A name as a part of HA object ids and unique ids: lower case, [a-z0-9_-] only."""
  return _ID_UNSAFE.sub("_", name.lower()).strip("_") or "camera"


def _check_prefix(prefix: str, what: str) -> str:
  prefix = prefix.strip("/")
  if not prefix or set(prefix) & set("+#\0"):
    raise errors.ConfigError(f"{what} must be a non-empty topic without wildcards (+, #), "
                             f"got {prefix!r}.")
  return prefix


class _Delivery:
  """Messages handed to paho and not yet acknowledged (QoS >= 1), shared with paho's thread.

  paho may acknowledge a message (on_publish) before `publish` has returned its id: such early
  ids wait in `early` until handed() sees them.
  """

  def __init__(self):
    self.lock = threading.Condition()
    self.pending = set()
    self.early = set()
    self.untracked = set()
    self.delivered = 0

  def handed(self, mid: int, tracked: bool) -> None:
    with self.lock:
      if mid in self.early:
        self.early.discard(mid)
        self.delivered += 1
      elif tracked:
        self.pending.add(mid)
      else:
        self.untracked.add(mid)

  def acknowledged(self, mid: int) -> None:
    with self.lock:
      if mid in self.pending:
        self.pending.discard(mid)
        self.delivered += 1
        self.lock.notify_all()
      elif mid in self.untracked:
        self.untracked.discard(mid)
        self.delivered += 1
      else:
        self.early.add(mid)

  def forget_untracked(self) -> None:
    """QoS 0 messages never written (a connection lost) are never acknowledged."""
    with self.lock:
      self.untracked.clear()


class ServiceMqtt:
  """The service's MQTT client for Home Assistant (see the module doc).

  Args:
    host, port: the broker.
    topic_prefix: the topics' first level(s), e.g. "daml".
    cameras: the camera names (each must give a distinct topic level and object id).
    client_id: the MQTT client id (unique on the broker: a second client with the same id
      disconnects the first); "": daml_tf-<host name>-<process id>.
    username, password: the broker's credentials, if it wants them.
    discovery_prefix: HA's discovery prefix ("homeassistant" unless HA was told otherwise);
      None: no discovery (the state topics only).
    qos: of everything but the scores (QoS 0).
    device_info: more fields of each camera's HA device (e.g. {"model": ..., "sw_version":
      ..., "configuration_url": ...}); identifiers, name and manufacturer are set here.
    keepalive_s: MQTT keepalive; the broker gives a silent client up (and publishes the Will)
      after 1.5 times this.
    queue_size: messages paho keeps while they are not acknowledged; more are dropped.
    flush_timeout_s: how long close() waits for queued messages to be acknowledged.
    score_interval_s: the least time between two scores of a camera.
    clock: the time of the rate limit (tests pass a fake one).
    alarm_device_class: of the alarm's binary_sensor ("problem", or "motion", "safety", ...).
    node_id: the first part of every unique id and device identifier.
    event_types: the event entity's event types.
  """

  def __init__(self, host: str, port: int, topic_prefix: str, cameras: Sequence[str],
               client_id: str = "", username: Optional[str] = None,
               password: Optional[str] = None,
               discovery_prefix: Optional[str] = "homeassistant", qos: int = 1,
               device_info: Optional[Mapping[str, Any]] = None, *,
               keepalive_s: int = DEFAULT_KEEPALIVE_S, queue_size: int = DEFAULT_QUEUE_SIZE,
               flush_timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S,
               score_interval_s: float = DEFAULT_SCORE_INTERVAL_S,
               clock: Callable[[], float] = time.monotonic,
               alarm_device_class: str = "problem", node_id: str = "daml_tf",
               event_types: Sequence[str] = EVENT_TYPES):
    if qos not in (0, 1, 2):
      raise errors.ConfigError(f"MQTT qos must be 0, 1 or 2, got {qos}.")
    if queue_size < 1:
      raise errors.ConfigError(f"MQTT queue_size must be >= 1, got {queue_size}.")
    if not cameras:
      raise errors.ConfigError("ServiceMqtt needs at least one camera.")
    self.address = f"{host}:{port}"
    self.prefix = _check_prefix(topic_prefix, "The MQTT topic prefix")
    self.discovery_prefix = (None if discovery_prefix is None
                             else _check_prefix(discovery_prefix, "The discovery prefix"))
    self.cameras = list(cameras)
    self.qos = qos
    self.flush_timeout_s = flush_timeout_s
    self.score_interval_s = score_interval_s
    self.alarm_device_class = alarm_device_class
    self.node_id = object_id_part(node_id)
    self.event_types = list(event_types)
    self.device_info = dict(device_info or {})
    self._clock = clock
    self._levels: Dict[str, str] = {}
    self._ids: Dict[str, str] = {}
    for camera in self.cameras:
      level, part = topic_level(camera), object_id_part(camera)
      for name, value, taken in (("topic level", level, self._levels),
                                 ("object id", part, self._ids)):
        if value in taken.values():
          raise errors.ConfigError(f"Cameras {camera!r} and "
                                   f"{next(c for c, v in taken.items() if v == value)!r} have "
                                   f"the same MQTT {name} {value!r}: rename one.")
      self._levels[camera], self._ids[camera] = level, part
    self.availability_topic = f"{self.prefix}/available"
    self.events_topic = f"{self.prefix}/events"
    self.ha_status_topic = (None if self.discovery_prefix is None
                            else f"{self.discovery_prefix}/status")
    # The retained states, republished on every connection and on HA's birth message; the
    # latest score too (not retained). Guarded by _state_lock, which is held around publish so
    # that a republish cannot overtake a newer state.
    self._state_lock = threading.RLock()
    self._alarm: Dict[str, Optional[str]] = dict.fromkeys(self.cameras)
    self._snapshot: Dict[str, Optional[bytes]] = dict.fromkeys(self.cameras)
    self._status: Dict[str, Optional[str]] = dict.fromkeys(self.cameras)
    self._score: Dict[str, Optional[str]] = dict.fromkeys(self.cameras)
    self._score_at: Dict[str, float] = {}
    # Orders `online` (on a connection) against `stopped` (close).
    self._availability_lock = threading.Lock()
    self._closed = False
    self._connected = threading.Event()
    self._delivery = _Delivery()
    self._counts = dict.fromkeys(("connections", "published", "dropped", "held_offline",
                                  "scores_rate_limited", "scores_offline", "discoveries"), 0)
    self._counts_lock = threading.Lock()
    self._republish = threading.Event()
    self._republisher = threading.Thread(target=self._republish_loop, daemon=True,
                                         name="mqtt-republish")
    client_id = client_id or f"daml_tf-{socket.gethostname()}-{os.getpid()}"
    self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                               protocol=paho.MQTTv311)
    self._client.on_connect = self._on_connect
    self._client.on_connect_fail = self._on_connect_fail
    self._client.on_disconnect = self._on_disconnect
    self._client.on_publish = self._on_publish
    self._client.on_message = self._on_message
    # An exception in a callback would otherwise end paho's thread, and the reconnection.
    self._client.suppress_exceptions = True
    self._client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
    self._client.max_queued_messages_set(queue_size)
    self._client.connect_timeout = CONNECT_TIMEOUT_S
    if username:
      self._client.username_pw_set(username, password)
    # Before connecting: the broker publishes it when the connection dies without a DISCONNECT
    # (a crash, a kill, a network cut noticed by the keepalive).
    self._client.will_set(self.availability_topic, OFFLINE, qos=max(qos, 1), retain=True)
    self._republisher.start()
    self._client.connect_async(host, port, keepalive=keepalive_s)
    self._client.loop_start()
    logging.info("MQTT: Home Assistant topics for %d cameras under %s/ on %s (discovery: %s, "
                 "client id %s).", len(self.cameras), self.prefix, self.address,
                 "none" if self.discovery_prefix is None else self.discovery_prefix + "/",
                 client_id)

  # --- topics and discovery --------------------------------------------------------------------

  def topic(self, camera: str, what: str) -> str:
    """`<prefix>/<camera>/<what>` (what: alarm, snapshot, score, status, events)."""
    if camera not in self._levels:
      raise ValueError(f"Unknown camera {camera!r}; the cameras are {self.cameras}.")
    return f"{self.prefix}/{self._levels[camera]}/{what}"

  def _device(self, camera: str) -> Dict[str, Any]:
    device = {"model": DEFAULT_MODEL, **self.device_info}
    device.update(identifiers=[f"{self.node_id}_{self._ids[camera]}"], name=camera,
                  manufacturer=MANUFACTURER)
    return device

  def discovery_configs(self) -> Dict[str, Dict[str, Any]]:
    """{config topic: config} of every camera's entities ({} without discovery)."""
    configs = {}
    if self.discovery_prefix is None:
      return configs
    for camera in self.cameras:
      common = {
          "device": self._device(camera),
          "origin": {"name": MANUFACTURER},
          "availability_mode": "all",
          "availability": [
              {"topic": self.availability_topic, "payload_available": ONLINE,
               "payload_not_available": OFFLINE, "value_template": _AVAILABILITY_TEMPLATE},
              {"topic": self.topic(camera, "status"), "payload_available": ONLINE,
               "payload_not_available": OFFLINE},
          ],
      }
      entities = {
          ("binary_sensor", "alarm"): {
              "name": "Alarm", "state_topic": self.topic(camera, "alarm"),
              "payload_on": ALARM_ON, "payload_off": ALARM_OFF,
              "device_class": self.alarm_device_class},
          ("sensor", "score"): {
              "name": "Anomaly score", "state_topic": self.topic(camera, "score"),
              "state_class": "measurement", "suggested_display_precision": 3},
          ("image", "snapshot"): {
              "name": "Alarm snapshot", "image_topic": self.topic(camera, "snapshot"),
              "content_type": "image/jpeg"},
          ("event", "alarm_event"): {
              "name": "Alarm event", "state_topic": self.topic(camera, "events"),
              "event_types": self.event_types, "value_template": _EVENT_TEMPLATE},
      }
      for (component, what), config in entities.items():
        object_id = f"{self.node_id}_{self._ids[camera]}_{what}"
        # object_id names the entity for HA before 2025.10, default_entity_id from 2025.10 on
        # (which warns about object_id and drops it in 2026.4); each ignores the other.
        configs[f"{self.discovery_prefix}/{component}/{object_id}/config"] = {
            "unique_id": object_id, "object_id": object_id,
            "default_entity_id": f"{component}.{object_id}", "qos": self.qos,
            **config, **common}
    return configs

  # --- publishing ------------------------------------------------------------------------------

  def _count(self, key: str, n: int = 1) -> None:
    with self._counts_lock:
      self._counts[key] += n

  def _publish(self, topic: str, payload: Union[str, bytes], retain: bool,
               qos: Optional[int] = None) -> bool:
    """Hands one message to paho; False if it was dropped."""
    qos = self.qos if qos is None else qos
    try:
      info = self._client.publish(topic, payload, qos=qos, retain=retain)
    except Exception as e:  # pylint: disable=broad-except
      # Whatever paho raises, the frame loop goes on.
      self._drop(topic, f"publish failed: {e!r}")
      return False
    if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
      self._drop(topic, "the outgoing queue is full")
      return False
    if info.rc == paho.MQTT_ERR_NO_CONN and qos == 0:
      self._drop(topic, "not connected (QoS 0 is not queued)")
      return False
    # QoS >= 1 while disconnected: paho keeps it and sends it on the next connection.
    self._delivery.handed(info.mid, tracked=qos > 0)
    self._count("published")
    return True

  def _drop(self, topic: str, why: str) -> None:
    self._count("dropped")
    logging.log_every_n_seconds(logging.WARNING, "MQTT: dropped a message to %s: %s.", 10,
                                topic, why)

  def _publish_state(self, topic: str, payload: Union[str, bytes]) -> None:
    # Under _state_lock (the caller's). Disconnected: the next connection publishes the state.
    if self._connected.is_set():
      self._publish(topic, payload, retain=True)
    else:
      self._count("held_offline")

  def publish_alarm(self, camera: str, on: bool) -> None:
    """The camera's alarm: ON or OFF (retained)."""
    topic = self.topic(camera, "alarm")
    with self._state_lock:
      if self._closed:
        return
      self._alarm[camera] = ALARM_ON if on else ALARM_OFF
      self._publish_state(topic, self._alarm[camera])

  def publish_snapshot(self, camera: str, jpeg: bytes) -> None:
    """The camera's snapshot: the JPEG of its latest alarm's peak (retained)."""
    topic = self.topic(camera, "snapshot")
    with self._state_lock:
      if self._closed:
        return
      self._snapshot[camera] = bytes(jpeg)
      self._publish_state(topic, self._snapshot[camera])

  def publish_status(self, camera: str, online: bool) -> None:
    """The camera's stream: online (frames come) or offline (retained)."""
    topic = self.topic(camera, "status")
    with self._state_lock:
      if self._closed:
        return
      self._status[camera] = ONLINE if online else OFFLINE
      self._publish_state(topic, self._status[camera])

  def publish_score(self, camera: str, score: Optional[float], force: bool = False) -> bool:
    """The camera's score, unless one was published less than score_interval_s ago (force:
    publish anyway, e.g. at an alarm's start) or the client is not connected. QoS 0, not
    retained: a score is stale in a second. True if published."""
    topic = self.topic(camera, "score")
    if score is None or score != score:  # None or NaN: no score yet (warming up).
      return False
    with self._state_lock:
      if self._closed:
        return False
      now = self._clock()
      self._score[camera] = f"{float(score):.6g}"
      last = self._score_at.get(camera)
      if not force and last is not None and now - last < self.score_interval_s:
        self._count("scores_rate_limited")
        return False
      if not self._connected.is_set():
        self._count("scores_offline")
        return False
      self._score_at[camera] = now
      return self._publish(topic, self._score[camera], retain=False, qos=0)

  def publish_event(self, camera: str, record: Union[Record, str]) -> None:
    """An event record (alarm_start, alarm_end) to the camera's events topic and the global
    one; queued while disconnected (QoS >= 1). record: a dict (published as json.dumps) or its
    JSON already encoded (inference.events.encode(record): the bytes of events.jsonl)."""
    payload = record if isinstance(record, str) else json.dumps(record)
    topic = self.topic(camera, "events")
    if self._closed:
      return
    self._publish(topic, payload, retain=False)
    self._publish(self.events_topic, payload, retain=False)

  def emit(self, record: Record) -> None:
    """An events.EventSink: publish_event to the record's camera (AlarmEventWriter does not
    close its sinks; whoever made this client closes it). A record of a camera this client
    was not given is dropped (logged), not raised: a sink must not stop the frame loop."""
    camera = str(record.get("camera", ""))
    if camera not in self._levels:
      self._drop(f"{self.prefix}/?/events", f"unknown camera {camera!r}")
      return
    self.publish_event(camera, record)

  def _republish_all(self, why: str) -> None:
    """The discovery configs and the current states (in the republisher thread)."""
    with self._state_lock:
      if self._closed or not self._connected.is_set():
        return
      for topic, config in self.discovery_configs().items():
        self._publish(topic, json.dumps(config), retain=True)
      for camera in self.cameras:
        for what, value in (("status", self._status[camera]), ("alarm", self._alarm[camera]),
                            ("snapshot", self._snapshot[camera])):
          if value is not None:
            self._publish(self.topic(camera, what), value, retain=True)
        if self._score[camera] is not None:
          self._publish(self.topic(camera, "score"), self._score[camera], retain=False, qos=0)
    self._count("discoveries")
    logging.info("MQTT: published %s the states of %d cameras (%s).",
                 "the discovery and" if self.discovery_prefix else "", len(self.cameras), why)

  def _republish_loop(self) -> None:
    while True:
      self._republish.wait()
      self._republish.clear()
      if self._closed:
        return
      try:
        self._republish_all("connected or Home Assistant restarted")
      except Exception:  # pylint: disable=broad-except
        logging.exception("MQTT: republishing the discovery failed.")

  # --- paho's callbacks (network thread; see "Locks" in the module doc) -----------------------

  def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
    del userdata, flags, properties
    if reason_code.is_failure:
      logging.error("MQTT: broker %s refused the connection: %s (retrying).", self.address,
                    reason_code)
      return
    with self._availability_lock:
      if self._closed:
        return
      self._connected.set()
      self._publish(self.availability_topic, ONLINE, retain=True, qos=max(self.qos, 1))
    if self.ha_status_topic is not None:
      client.subscribe(self.ha_status_topic, qos=1)
    self._count("connections")
    logging.info("MQTT: connected to %s.", self.address)
    self._republish.set()

  def _on_connect_fail(self, client, userdata) -> None:
    del client, userdata
    logging.log_every_n_seconds(logging.WARNING, "MQTT: cannot connect to %s; retrying with "
                                "backoff up to %d s.", 60, self.address, RECONNECT_MAX_S)

  def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
    del client, userdata, flags, properties
    self._connected.clear()
    self._delivery.forget_untracked()
    if not self._closed:
      logging.warning("MQTT: disconnected from %s (%s); reconnecting.", self.address,
                      reason_code)

  def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
    del client, userdata, reason_code, properties
    self._delivery.acknowledged(mid)

  def _on_message(self, client, userdata, message) -> None:
    del client, userdata
    if (self.ha_status_topic is not None and message.topic == self.ha_status_topic
        and message.payload == ONLINE.encode()):
      logging.info("MQTT: Home Assistant is online; republishing the discovery.")
      self._republish.set()

  # --- state and shutdown ----------------------------------------------------------------------

  @property
  def connected(self) -> bool:
    return self._connected.is_set()

  def wait_connected(self, timeout_s: float) -> bool:
    """Blocks until connected or timeout_s passed; True if connected."""
    return self._connected.wait(timeout_s)

  def flush(self, timeout_s: float) -> bool:
    """Waits at most timeout_s until every QoS >= 1 message handed to paho is acknowledged."""
    with self._delivery.lock:
      return self._delivery.lock.wait_for(lambda: not self._delivery.pending, timeout=timeout_s)

  def stats(self) -> Dict[str, Any]:
    """connected; connections made; messages published (handed to paho), delivered
    (acknowledged, or written for QoS 0), pending (QoS >= 1 not yet acknowledged) and dropped
    (queue full, or QoS 0 while disconnected); held_offline (states kept for the next
    connection); scores_rate_limited, scores_offline; discoveries (republications)."""
    with self._counts_lock:
      stats: Dict[str, Any] = dict(self._counts)
    with self._delivery.lock:
      stats["delivered"] = self._delivery.delivered
      stats["pending"] = len(self._delivery.pending)
    stats["connected"] = self.connected
    return stats

  def close(self) -> None:
    """Waits (at most flush_timeout_s) for queued messages, publishes `stopped` on the
    availability topic and waits for it (within the same time), then disconnects cleanly (the
    broker drops the Will) and stops paho's thread (at most STOP_JOIN_S more)."""
    if self._closed:
      return
    deadline = time.monotonic() + self.flush_timeout_s
    self.flush(self.flush_timeout_s)
    with self._state_lock, self._availability_lock:
      self._closed = True
      stopped = self._connected.is_set() and self._publish(
          self.availability_topic, STOPPED, retain=True, qos=max(self.qos, 1))
    if stopped:
      self.flush(max(0.0, deadline - time.monotonic()))
    self._republish.set()
    self._client.disconnect()
    # loop_stop joins paho's thread without a timeout, and that thread may sit in a TCP
    # connect or a backoff sleep: join it from a helper thread, for a bounded time.
    stopper = threading.Thread(target=self._client.loop_stop, daemon=True)
    stopper.start()
    stopper.join(STOP_JOIN_S)
    self._republisher.join(STOP_JOIN_S)
    stats = self.stats()
    log = logging.warning if stats["dropped"] or stats["pending"] else logging.info
    log("MQTT: closed (%s): %d messages published, %d delivered, %d dropped, %d undelivered.",
        "stopped published" if stopped else "not connected: the broker keeps the last "
        "availability", stats["published"], stats["delivered"], stats["dropped"],
        stats["pending"])
