"""What daml_tf's two MQTT clients share (detect's event sink and the service's Home Assistant
client): connection settings and the topic level of a camera name. No TensorFlow here, so the
service's MQTT client loads none."""

DEFAULT_QUEUE_SIZE = 1000
DEFAULT_FLUSH_TIMEOUT_S = 5.0
DEFAULT_KEEPALIVE_S = 30
# Reconnection backoff (paho's reconnect_delay_set): 1 s, doubling up to 30 s, so a broker that
# comes back is found within 30 s while a long outage costs one attempt per 30 s.
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
# A TCP connect to an unreachable host gives up after this (paho's default is 5 s).
CONNECT_TIMEOUT_S = 5.0
# How long close() waits for paho's network thread to end after disconnecting.
STOP_JOIN_S = 2.0
# Characters a topic level of a camera name cannot hold: the level separator and wildcards.
_TOPIC_UNSAFE = str.maketrans({"/": "_", "+": "_", "#": "_", "\0": "_"})


def topic_level(camera: str) -> str:
  """A camera name as one topic level: '/', '+', '#' become '_' ("" becomes "camera")."""
  return camera.translate(_TOPIC_UNSAFE) or "camera"
