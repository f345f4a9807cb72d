"""The camera service's YAML configuration (`python -m daml_tf.serve --config=cameras.yaml`).

The file, Frigate-like:

  cameras:
    gate:                      # [a-z0-9_-]+: the output folder and the MQTT topics
      input: rtsp://${GATE_USER}:${GATE_PASSWORD}@10.0.0.5/stream2
      model_dir: runs/gate     # a run, a SavedModel or a LiteRT export
      threshold: 0.084         # default: the model's threshold.json
      masks: ["0,0,0.3,0,0.3,0.2,0,0.2"]   # polygons, x,y pairs relative 0-1
      fps: 10                  # optional overrides of detection settings (DETECTION_KEYS)
      alarm: {min_frames: 5}   # overrides the top-level alarm: key by key
  record:
    output_dir: /var/lib/daml
  mqtt:                        # optional; absent (or null): no MQTT
    host: 127.0.0.1
    password: ${MQTT_PASSWORD}
  alarm: {...}                 # AlarmConfig defaults of every camera
  http:                        # optional: the page and the API (daml_tf.service.web)
    host: 127.0.0.1            # another address needs token_env or allow_unauthenticated
    port: 8080
    token_env: DAML_HTTP_TOKEN # the variable holding the bearer token
  x-anything: ...              # ignored: a place for YAML anchors (`<<: *name` merges them)

`${VAR}` and `${VAR:-default}` (default when VAR is unset or empty) in a string value are
replaced from the environment after the YAML is parsed, so a variable's value can never change
the structure of the file; `$${` is a literal `${`. A number field may be a string holding a
variable (`port: ${MQTT_PORT:-1883}`). Keys starting with `x-` at the top level are skipped,
variables and all.

Every mistake raises errors.ConfigError with one line `<file>:<line>:<col>: <key path>:
<problem>`, e.g. `cameras.yaml:4:5: cameras.gate.modle_dir: unknown key (did you mean
'model_dir'?)`; line and column are 1-based.

Secrets: values substituted for variables whose names look secret (SECRET_NAME_PARTS), URL
passwords and mqtt.password are collected by `secret_values`; `redact` hides URL passwords in a
string and `install_redaction` keeps all of them out of the logs. CameraConfig's repr shows the
input redacted.

This module imports no TensorFlow (nor anything that does), so the service can validate its
configuration before loading a model.
"""

import dataclasses
import difflib
import logging as std_logging
import math
import os
import re
from typing import (Any, Dict, FrozenSet, Iterable, Iterator, Mapping, Optional, Sequence, Set,
                    Tuple)
import urllib.parse

from absl import logging
import yaml

from daml_tf import errors
from daml_tf import smoothing as smoothing_lib

Point = Tuple[float, float]
Polygon = Tuple[Point, ...]

CAMERA_NAME_PATTERN = re.compile(r"[a-z0-9_-]{1,64}")
# The same as inference.sources.RTSP_TRANSPORTS, copied because that module imports TensorFlow.
RTSP_TRANSPORTS = ("tcp", "udp", "udp_multicast", "http", "https")
# Parts of an environment variable's name that make its value a secret.
SECRET_NAME_PARTS = ("PASSWORD", "PASS", "TOKEN", "SECRET", "KEY", "CREDENTIAL")
# Top-level keys starting with this are ignored: a place for YAML anchors shared by cameras
# (`x-defaults: &defaults {...}`, then `<<: *defaults` in a camera), as in Docker Compose.
EXTENSION_PREFIX = "x-"
# What redaction puts in place of a secret.
MASK = "***"

# Provisional: chosen by eye, so that a short blip (one or two frames) raises nothing and one
# event is not split into several; a measurement of event recall, delay and false alarms per
# hour on labelled footage (daml_tf.service.event_metrics) will fix them.
DEFAULT_MIN_FRAMES = 3
DEFAULT_END_RATIO = 0.8
DEFAULT_COOLDOWN_S = 5.0
DEFAULT_SCENE_CHANGE_FRACTION = 0.5
DEFAULT_SCENE_CHANGE_DELTA = 0.15


class ServiceConfigError(errors.ConfigError):
  """A bad service configuration file; the message is one line naming the place and key."""


@dataclasses.dataclass(frozen=True)
class AlarmConfig:
  """False-alarm controls of a camera (see alarms.AlarmController).

  Attributes:
    min_frames: debounce: an alarm starts at the min_frames-th consecutive frame whose score is
      above the threshold; also the frames after a scene change that start no alarm.
    end_ratio: hysteresis: an open alarm ends at the first frame whose score is below
      end_ratio * threshold (0 < end_ratio <= 1; 1 means no hysteresis).
    cooldown_s: alarms less than this apart (end to next start) are merged into one.
    scene_change_fraction: the fraction of pixels that must change at once (between two
      consecutive frames) for a scene change (the camera moved, the lights went on).
    scene_change_delta: the absolute change of a pixel's intensity (0-1) that counts it as
      changed.
  """

  min_frames: int = DEFAULT_MIN_FRAMES
  end_ratio: float = DEFAULT_END_RATIO
  cooldown_s: float = DEFAULT_COOLDOWN_S
  scene_change_fraction: float = DEFAULT_SCENE_CHANGE_FRACTION
  scene_change_delta: float = DEFAULT_SCENE_CHANGE_DELTA


# The keys of a camera that override the detection settings of the same name
# (inference.detection.DetectionConfig); None there means "not set: the detection default".
DETECTION_KEYS = ("fps", "score", "smoothing", "read_timeout_s", "reconnect_initial_s",
                  "reconnect_max_s", "max_reconnects", "give_up_after_s", "rtsp_transport",
                  "input_options")


@dataclasses.dataclass(frozen=True, repr=False)
class CameraConfig:
  """One camera.

  Attributes:
    name: [a-z0-9_-]+, at most 64 characters: its output folder and its MQTT topics.
    input: what is read: a stream URL, a file, a frames folder or a device. It may hold a
      password: log `display_input`, never this.
    model_dir: the model: a run folder, a SavedModel or a LiteRT export.
    threshold: the alarm threshold; None: the model's own (threshold.json or the export's).
    masks: polygons, each ((x, y), ...) relative to the frame (0-1; x to the width, y to the
      height); a cell of the latent grid whose centre is inside one is not scored.
    fps, score, smoothing, read_timeout_s, reconnect_initial_s, reconnect_max_s,
      max_reconnects, give_up_after_s, rtsp_transport: overrides of the detection settings of
      these names (inference.detection.DetectionConfig); None: not set, the detection default.
      As there, max_reconnects and give_up_after_s of 0 mean never give up.
    input_options: FFmpeg options of the input, (key, value) pairs in file order; None: not set.
    alarm: the false-alarm controls, the top-level `alarm:` overridden key by key by the
      camera's own.
  """

  name: str
  input: str
  model_dir: str
  threshold: Optional[float] = None
  masks: Tuple[Polygon, ...] = ()
  fps: Optional[float] = None
  score: Optional[str] = None
  smoothing: Optional[str] = None
  read_timeout_s: Optional[float] = None
  reconnect_initial_s: Optional[float] = None
  reconnect_max_s: Optional[float] = None
  max_reconnects: Optional[int] = None
  give_up_after_s: Optional[float] = None
  rtsp_transport: Optional[str] = None
  input_options: Optional[Tuple[Tuple[str, str], ...]] = None
  alarm: AlarmConfig = AlarmConfig()

  @property
  def display_input(self) -> str:
    """The input with any password hidden, for logs and messages."""
    return redact(self.input)

  def detection_overrides(self) -> Dict[str, Any]:
    """The detection settings this camera sets (those not None), by DetectionConfig field."""
    return {key: getattr(self, key) for key in DETECTION_KEYS if getattr(self, key) is not None}

  def __repr__(self) -> str:
    parts = []
    for field in dataclasses.fields(self):
      value = self.display_input if field.name == "input" else getattr(self, field.name)
      parts.append(f"{field.name}={value!r}")
    return f"CameraConfig({', '.join(parts)})"


@dataclasses.dataclass(frozen=True)
class RecordConfig:
  """What is kept of each alarm, and for how long.

  Attributes:
    output_dir: the root; a camera's events go to `<output_dir>/<camera>/events/<id>/`.
    pre_capture_s: seconds of video before an alarm's start kept in its clip.
    post_capture_s: seconds of video after an alarm's end kept in its clip.
    retain_days: events older than this are deleted.
    max_disk_mb: when set, the oldest events are also deleted while all events together take
      more than this (MiB); None: no budget.
    snapshot_quality: JPEG quality of the snapshots (1-100).
  """

  output_dir: str
  pre_capture_s: float = 5.0
  post_capture_s: float = 5.0
  retain_days: float = 10.0
  max_disk_mb: Optional[float] = None
  snapshot_quality: int = 90

  @property
  def max_disk_bytes(self) -> Optional[int]:
    """max_disk_mb in bytes, or None."""
    return None if self.max_disk_mb is None else int(self.max_disk_mb * 1024 * 1024)


@dataclasses.dataclass(frozen=True)
class ServiceMqttConfig:
  """The MQTT broker the events go to (not inference.mqtt.MqttConfig, which `detect` uses).

  Attributes:
    host, port: the broker.
    topic_prefix: topics are `<topic_prefix>/<camera>/...`.
    client_id: the MQTT client id ("": one made from the host name and process id).
    username, password: the broker's login; None: none (password not shown in repr).
    discovery_prefix: Home Assistant's MQTT discovery prefix; None: no discovery messages.
    qos: 0, 1 or 2.
  """

  host: str
  port: int = 1883
  topic_prefix: str = "daml"
  client_id: str = ""
  username: Optional[str] = None
  password: Optional[str] = dataclasses.field(default=None, repr=False)
  discovery_prefix: Optional[str] = "homeassistant"
  qos: int = 1


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_HTTP_PORT = 8080
DEFAULT_VIEWER_FPS = 4.0
# More than this per viewer would cost the frame loop's CPU on a small machine for no use: the
# picture is for a person, not for analysis.
MAX_VIEWER_FPS = 15.0


@dataclasses.dataclass(frozen=True)
class HttpConfig:
  """The page and the HTTP API (daml_tf.service.web), read-only.

  Attributes:
    host, port: where it listens (port 0: any free port, logged).
    token_env: the environment variable holding the bearer token every request must carry
      (`Authorization: Bearer <token>`, or `?token=`); "" for none. Required when host is not
      a loopback address, unless allow_unauthenticated.
    allow_unauthenticated: serve another address without a token (logged loudly).
    viewer_fps: at most this many annotated pictures a second per camera while someone watches.
    token: the token read from token_env (never shown in repr).
  """

  host: str = "127.0.0.1"
  port: int = DEFAULT_HTTP_PORT
  token_env: str = ""
  allow_unauthenticated: bool = False
  viewer_fps: float = DEFAULT_VIEWER_FPS
  token: str = dataclasses.field(default="", repr=False)

  @property
  def loopback(self) -> bool:
    return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
  """A whole configuration file.

  Attributes:
    cameras: in file order, names unique.
    record: where and how long events are kept.
    mqtt: the broker, or None for no MQTT.
    http: the page and the API, or None (the default) for none.
    alarm: the top-level alarm defaults (each camera's `alarm` already holds its merged
      settings).
    source_name: the file, for messages.
    substituted_secrets: the values substituted for variables whose names look secret (see
      `secret_values`, which adds the URL passwords and mqtt.password).
  """

  cameras: Tuple[CameraConfig, ...]
  record: RecordConfig
  mqtt: Optional[ServiceMqttConfig] = None
  alarm: AlarmConfig = AlarmConfig()
  http: Optional[HttpConfig] = None
  source_name: str = ""
  substituted_secrets: FrozenSet[str] = dataclasses.field(default=frozenset(), repr=False,
                                                          compare=False)

  def camera(self, name: str) -> CameraConfig:
    """The camera of this name; KeyError if there is none."""
    for camera in self.cameras:
      if camera.name == name:
        return camera
    raise KeyError(name)


# ------------------------------------------------------------------------------------------
# Secrets.

# A URL's scheme and what follows up to a space or a quote (URLs inside reprs and messages).
_URL = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<rest>[^\s'\"<>]+)")
# A query parameter whose name looks secret (…?token=abc&…).
_SECRET_QUERY = re.compile(
    r"(?P<name>[?&;][^=&;#\s'\"]*(?:pass|pwd|token|secret|key|auth|sig)[^=&;#\s'\"]*=)"
    r"(?P<value>[^&;#\s'\"]*)", re.IGNORECASE)


def _url_userinfo_end(rest: str) -> int:
  """Where the user-info of a URL's part after `scheme://` ends (its last '@'), or -1."""
  netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
  at = netloc.rfind("@")
  if at < 0 and ":" in rest:
    # A password holding an unencoded '/' or '#' ends the host part early; hiding too much of
    # a URL is better than showing part of a password. (Not past a '?': an '@' in a query is
    # no password's end.)
    at = rest.rfind("@")
    if at >= 0 and (":" not in rest[:at] or "?" in rest[:at]):
      at = -1
  return at


def _redact_url(match: "re.Match[str]") -> str:
  scheme, rest = match.group("scheme"), match.group("rest")
  at = _url_userinfo_end(rest)
  if at >= 0:
    user, colon, _ = rest[:at].partition(":")
    if colon:
      rest = f"{user}:{MASK}{rest[at:]}"
  return scheme + _SECRET_QUERY.sub(lambda m: m.group("name") + MASK, rest)


def redact(text_or_url: str) -> str:
  """The text with every URL's password (`rtsp://user:pass@host` -> `rtsp://user:***@host`)
  and every secret-looking query parameter (`?token=...`) replaced by ***."""
  return _URL.sub(_redact_url, text_or_url)


def url_passwords(text: str) -> Set[str]:
  """The passwords of the URLs in text, as written and percent-decoded."""
  found = set()
  for match in _URL.finditer(text):
    rest = match.group("rest")
    at = _url_userinfo_end(rest)
    if at >= 0:
      _, colon, password = rest[:at].partition(":")
      if colon and password:
        found.update({password, urllib.parse.unquote(password)})
    for query in _SECRET_QUERY.finditer(rest):
      if query.group("value"):
        found.update({query.group("value"), urllib.parse.unquote(query.group("value"))})
  return found


def looks_secret(variable_name: str) -> bool:
  """Whether an environment variable's name says its value is a secret (GATE_PASSWORD, ...)."""
  upper = variable_name.upper()
  return any(part in upper for part in SECRET_NAME_PARTS)


def _strings(value: Any) -> Iterator[str]:
  """Every string held by a config (dataclasses, tuples), depth first."""
  if isinstance(value, str):
    yield value
  elif dataclasses.is_dataclass(value) and not isinstance(value, type):
    for field in dataclasses.fields(value):
      if field.name != "substituted_secrets":
        yield from _strings(getattr(value, field.name))
  elif isinstance(value, (tuple, list)):
    for item in value:
      yield from _strings(item)


def secret_values(cfg: ServiceConfig) -> Set[str]:
  """What must never be logged: the values substituted for secret-looking variables, the
  password of every URL in the configuration (as written and percent-decoded), and
  mqtt.password. Empty strings are left out (they would match everywhere)."""
  secrets = set(cfg.substituted_secrets)
  for text in _strings(cfg):
    secrets |= url_passwords(text)
  if cfg.mqtt is not None and cfg.mqtt.password:
    secrets.add(cfg.mqtt.password)
  if cfg.http is not None and cfg.http.token:
    secrets.add(cfg.http.token)
  secrets.discard("")
  return secrets


class RedactingFilter(std_logging.Filter):
  """A logging filter that replaces each secret in a record (its message, exception and stack
  text) with ***, and hides URL passwords (`redact`). It never drops a record.

  Installed on a handler it sees every record the handler writes, whichever logger made it (a
  filter on a logger only sees records logged on that very logger): see install_redaction.

  Args:
    secrets: the strings to hide (secret_values).
    redact_urls: also apply `redact` to the text.
  """

  def __init__(self, secrets: Iterable[str], redact_urls: bool = True):
    super().__init__()
    self.redact_urls = redact_urls
    self.secrets = secrets

  @property
  def secrets(self) -> Tuple[str, ...]:
    return self._secrets

  @secrets.setter
  def secrets(self, values: Iterable[str]) -> None:
    # Longest first, so that a secret holding another is replaced whole.
    self._secrets = tuple(sorted({value for value in values if value}, key=len, reverse=True))

  def scrub(self, text: str) -> str:
    """text with every secret replaced."""
    for secret in self._secrets:
      text = text.replace(secret, MASK)
    return redact(text) if self.redact_urls else text

  def filter(self, record: std_logging.LogRecord) -> bool:
    try:
      message = record.getMessage()
    except Exception:  # pylint: disable=broad-except
      # A record whose arguments do not fit its format: logging reports that itself.
      return True
    record.msg = self.scrub(message)
    record.args = None
    if record.exc_info and not record.exc_text:
      # Formatters use exc_text when it is set, so the traceback is written scrubbed.
      record.exc_text = std_logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
      record.exc_text = self.scrub(record.exc_text)
    if record.stack_info:
      record.stack_info = self.scrub(record.stack_info)
    return True


def install_redaction(secrets: Iterable[str]) -> RedactingFilter:
  """Adds a RedactingFilter to the root logger, every handler it has now, and absl's handler.

  Call it after logging is set up (after absl's app.run starts main): a handler added later
  does not get the filter.
  """
  redacting = RedactingFilter(secrets)
  root = std_logging.getLogger()
  root.addFilter(redacting)
  handlers = list(root.handlers)
  absl_handler = logging.get_absl_handler()
  if absl_handler not in handlers:
    handlers.append(absl_handler)
  for handler in handlers:
    handler.addFilter(redacting)
  return redacting


# ------------------------------------------------------------------------------------------
# Polygons.


def _polygon_number(value: Any) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float, str)):
    raise errors.ConfigError(f"expected a number, got {value!r}")
  try:
    number = float(value)
  except ValueError:
    raise errors.ConfigError(f"expected a number, got {value!r}") from None
  if not math.isfinite(number):
    raise errors.ConfigError(f"expected a finite number, got {value!r}")
  return number


def parse_polygon(spec: Any) -> Polygon:
  """A mask polygon from "x,y,x,y,..." or a list of numbers (or of [x, y] pairs).

  Coordinates are relative to the frame, 0-1 (x to the width, y to the height).

  Raises:
    errors.ConfigError: not numbers, an odd count, fewer than 3 points, a value outside 0-1.
  """
  if isinstance(spec, str):
    values = [item.strip() for item in spec.split(",")]
    if values == [""]:
      values = []
  elif isinstance(spec, (list, tuple)):
    values = []
    for item in spec:
      if isinstance(item, (list, tuple)):
        if len(item) != 2:
          raise errors.ConfigError(f"a point is [x, y], got {list(item)!r}")
        values.extend(item)
      else:
        values.append(item)
  else:
    raise errors.ConfigError(
        f"a polygon is a string \"x,y,x,y,...\" or a list of numbers, got {spec!r}")
  numbers = [_polygon_number(value) for value in values]
  if len(numbers) % 2:
    raise errors.ConfigError(f"a polygon needs an even number of values, got {len(numbers)}")
  if len(numbers) < 6:
    raise errors.ConfigError(f"a polygon needs at least 3 points, got {len(numbers) // 2}")
  outside = [number for number in numbers if not 0.0 <= number <= 1.0]
  if outside:
    raise errors.ConfigError(
        f"values must lie in 0-1 (relative to the frame), got {outside[0]:g}")
  return tuple(zip(numbers[0::2], numbers[1::2]))


# ------------------------------------------------------------------------------------------
# Parsing: YAML nodes with their place in the file.


@dataclasses.dataclass
class _Node:
  """A parsed YAML value with its 1-based place. A mapping's value is {key: (key node, value
  node)}, a sequence's [node, ...], a scalar's the Python value."""

  value: Any
  line: int
  column: int

  @property
  def kind(self) -> str:
    if isinstance(self.value, dict):
      return "mapping"
    if isinstance(self.value, list):
      return "sequence"
    return "scalar"


def _type_name(value: Any) -> str:
  if value is None:
    return "null"
  if isinstance(value, dict):
    return "a mapping"
  if isinstance(value, list):
    return "a list"
  return repr(value)


_MERGE_TAG = "tag:yaml.org,2002:merge"
# `$${` (a literal `${`), `${NAME}`, `${NAME:-default}`, or a bad `${` (no name group).
_VARIABLE = re.compile(
    r"\$\$\{|\$\{(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\})?")


class _Parser:
  """Turns a YAML text into a ServiceConfig; the first mistake raises ServiceConfigError."""

  def __init__(self, text: str, environ: Mapping[str, str], source_name: str):
    self.text = text
    self.environ = environ
    self.source_name = source_name
    self.secrets: Set[str] = set()

  # Errors.

  def fail(self, node: Optional[_Node], path: str, message: str) -> "ServiceConfigError":
    place = f"{self.source_name}:{node.line}:{node.column}" if node else self.source_name
    return ServiceConfigError(f"{place}: {path}: {message}" if path else f"{place}: {message}")

  def yaml_error(self, error: yaml.YAMLError) -> "ServiceConfigError":
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    place = (f"{self.source_name}:{mark.line + 1}:{mark.column + 1}" if mark is not None
             else self.source_name)
    if isinstance(error, yaml.MarkedYAMLError):
      parts = [error.context, error.problem]
      message = ": ".join(" ".join(str(part).split()) for part in parts if part)
    elif isinstance(error, yaml.reader.ReaderError) and isinstance(self.text, str):
      # A character YAML refuses (a control character): placed by its offset in the text.
      position = error.position
      line = self.text.count("\n", 0, position) + 1
      column = position - self.text.rfind("\n", 0, position)
      place = f"{self.source_name}:{line}:{column}"
      message = f"unacceptable character #x{error.character:04x}: {error.reason}"
    else:
      message = " ".join(str(error).split())
    return ServiceConfigError(f"{place}: YAML syntax error: {message}")

  # YAML.

  def compose(self) -> Optional[_Node]:
    try:
      loader = yaml.SafeLoader(self.text)
    except yaml.YAMLError as error:
      raise self.yaml_error(error) from None
    try:
      root = loader.get_single_node()
      if root is None:
        return None
      return self._convert(loader, root, {}, set())
    except yaml.YAMLError as error:
      raise self.yaml_error(error) from None
    finally:
      loader.dispose()

  def _convert(self, loader: yaml.SafeLoader, node: yaml.Node, done: Dict[int, _Node],
               active: Set[int]) -> _Node:
    # An alias is the same node object as its anchor: converted once (no exponential growth
    # of nested aliases) and refused when it contains itself.
    if id(node) in done:
      return done[id(node)]
    line, column = node.start_mark.line + 1, node.start_mark.column + 1
    if id(node) in active:
      raise ServiceConfigError(f"{self.source_name}:{line}:{column}: YAML syntax error: an "
                               "alias refers to a value that contains it")
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
      own = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
      # Resolves `<<: *defaults` merge keys: the merged pairs come first, then the mapping's
      # own, which override them (a key twice among its own is a mistake).
      loader.flatten_mapping(node)
      merged = len(node.value) - own
      pairs: Dict[Any, Tuple[_Node, _Node, bool]] = {}  # key: (key, value, is its own)
      for index, (key_node, value_node) in enumerate(node.value):
        key = self._convert(loader, key_node, done, active)
        if key.kind != "scalar" or not isinstance(key.value, (str, int, float, bool)):
          raise ServiceConfigError(f"{self.source_name}:{key.line}:{key.column}: a key must "
                                   f"be a name, got {_type_name(key.value)}")
        if index >= merged and key.value in pairs and pairs[key.value][2]:
          raise ServiceConfigError(f"{self.source_name}:{key.line}:{key.column}: duplicate "
                                   f"key {key.value!r}")
        pairs[key.value] = (key, self._convert(loader, value_node, done, active),
                            index >= merged)
      result = _Node({key: (key_node, value_node) for key, (key_node, value_node, _) in
                      pairs.items()}, line, column)
    elif isinstance(node, yaml.SequenceNode):
      result = _Node([self._convert(loader, item, done, active) for item in node.value], line,
                     column)
    else:
      try:
        value = loader.construct_object(node, deep=True)
      except (ValueError, TypeError, OverflowError):
        # PyYAML lets a constructor's own error through (`!!int abc`, a 30 February).
        raise ServiceConfigError(
            f"{self.source_name}:{line}:{column}: YAML syntax error: {node.value!r} is not a "
            f"valid {node.tag.rpartition(':')[2]}") from None
      result = _Node(value, line, column)
    active.discard(id(node))
    done[id(node)] = result
    return result

  # Variables.

  def substitute(self, node: _Node, path: str, text: str) -> str:
    """text with its ${VAR} and ${VAR:-default} replaced from the environment."""

    def replace(match: "re.Match[str]") -> str:
      if match.group(0) == "$${":
        return "${"
      name = match.group("name")
      if name is None:
        raise self.fail(node, path, "bad variable reference: write ${NAME} or ${NAME:-default} "
                        "(NAME of letters, digits and _), or $${ for a literal ${")
      value = self.environ.get(name)
      default = match.group("default")
      if default is not None and not value:
        value = default
      if value is None:
        raise self.fail(node, path, f"${{{name}}} is not set in the environment")
      if looks_secret(name) and value:
        self.secrets.add(value)
      return value

    return _VARIABLE.sub(replace, text)

  # Typed values.

  def mapping(self, node: Optional[_Node], path: str, allowed: Sequence[str],
              required: Sequence[str] = (), extensions: bool = False) -> Dict[str, _Node]:
    """A mapping's values by key, checked against allowed and required keys; null: {}. With
    extensions, keys starting with EXTENSION_PREFIX are left out."""
    if node is None or node.value is None:
      items: Dict[Any, Tuple[_Node, _Node]] = {}
    elif node.kind != "mapping":
      raise self.fail(node, path, f"expected a mapping, got {_type_name(node.value)}")
    else:
      items = {key: value for key, value in node.value.items()
               if not (extensions and str(key).startswith(EXTENSION_PREFIX))}
    for key, (key_node, _) in items.items():
      if key not in allowed:
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else (
            f" (known keys: {', '.join(allowed)})")
        raise self.fail(key_node, _join(path, key), f"unknown key{hint}")
    for key in required:
      if key not in items or items[key][1].value is None:
        where = items[key][1] if key in items else node
        raise self.fail(where, _join(path, key), "missing")
    return {key: value for key, (_, value) in items.items()}

  def string(self, node: _Node, path: str, *, optional: bool = False,
             empty: bool = True) -> Optional[str]:
    if node.value is None and optional:
      return None
    if not isinstance(node.value, str):
      hint = " (quote it)" if isinstance(node.value, (int, float, bool)) else ""
      raise self.fail(node, path, f"expected a string, got {_type_name(node.value)}{hint}")
    value = self.substitute(node, path, node.value)
    if not value and not empty:
      raise self.fail(node, path, "must not be empty")
    return value

  def number(self, node: _Node, path: str, *, integer: bool = False, optional: bool = False,
             minimum: Optional[float] = None, above: Optional[float] = None,
             maximum: Optional[float] = None) -> Optional[float]:
    """A number (int when integer), with its bounds (minimum and maximum inclusive, above
    exclusive). A string is read as a number after its ${VAR} are replaced; an empty one is
    None when optional."""
    expected = "a whole number" if integer else "a number"
    value = node.value
    if value is None and optional:
      return None
    if isinstance(value, str):
      # A variable's value, or a number YAML 1.1 reads as a string (1e3 needs a dot there).
      text = self.substitute(node, path, value).strip()
      if not text and optional:
        return None
      try:
        value = float(text)
      except ValueError:
        source = f" (from {value!r})" if text != value else ""
        raise self.fail(node, path, f"expected {expected}, got {text!r}{source}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise self.fail(node, path, f"expected {expected}, got {_type_name(value)}")
    if not math.isfinite(value):
      raise self.fail(node, path, f"expected a finite number, got {value!r}")
    if integer and not isinstance(value, int):
      if not float(value).is_integer():
        raise self.fail(node, path, f"expected {expected}, got {value!r}")
      value = int(value)
    if minimum is not None and value < minimum:
      raise self.fail(node, path, f"must be >= {minimum:g}, got {value:g}")
    if above is not None and value <= above:
      raise self.fail(node, path, f"must be > {above:g}, got {value:g}")
    if maximum is not None and value > maximum:
      raise self.fail(node, path, f"must be <= {maximum:g}, got {value:g}")
    return value if integer else float(value)

  # Sections.

  def alarm(self, node: Optional[_Node], path: str, base: AlarmConfig) -> AlarmConfig:
    fields = self.mapping(node, path, [field.name for field in dataclasses.fields(AlarmConfig)])
    values = {}
    checks = {
        "min_frames": dict(integer=True, minimum=1),
        "end_ratio": dict(above=0.0, maximum=1.0),
        "cooldown_s": dict(minimum=0.0),
        "scene_change_fraction": dict(above=0.0, maximum=1.0),
        "scene_change_delta": dict(above=0.0, maximum=1.0),
    }
    for key, value_node in fields.items():
      values[key] = self.number(value_node, _join(path, key), **checks[key])
    return dataclasses.replace(base, **values)

  def record(self, node: Optional[_Node]) -> RecordConfig:
    path = "record"
    fields = self.mapping(node, path, [field.name for field in dataclasses.fields(RecordConfig)],
                          required=("output_dir",))
    values: Dict[str, Any] = {"output_dir": self.string(fields["output_dir"], "record.output_dir",
                                                        empty=False)}
    checks = {
        "pre_capture_s": dict(minimum=0.0),
        "post_capture_s": dict(minimum=0.0),
        "retain_days": dict(above=0.0),
        "max_disk_mb": dict(above=0.0, optional=True),
        "snapshot_quality": dict(integer=True, minimum=1, maximum=100),
    }
    for key, value_node in fields.items():
      if key in checks:
        values[key] = self.number(value_node, _join(path, key), **checks[key])
    return RecordConfig(**values)

  def mqtt(self, node: _Node) -> ServiceMqttConfig:
    path = "mqtt"
    fields = self.mapping(node, path,
                          [field.name for field in dataclasses.fields(ServiceMqttConfig)],
                          required=("host",))
    values: Dict[str, Any] = {}
    for key, value_node in fields.items():
      key_path = _join(path, key)
      if key == "host":
        values[key] = self.string(value_node, key_path, empty=False)
      elif key == "port":
        values[key] = self.number(value_node, key_path, integer=True, minimum=1, maximum=65535)
      elif key == "qos":
        values[key] = self.number(value_node, key_path, integer=True, minimum=0, maximum=2)
      elif key in ("topic_prefix", "discovery_prefix"):
        value = self.string(value_node, key_path, optional=key == "discovery_prefix")
        if value is not None:
          if key == "discovery_prefix" and not value:
            value = None
          elif (not value or any(char in value for char in "+#\0") or value.startswith("/")
                or value.endswith("/")):
            raise self.fail(value_node, key_path,
                            f"must be a topic without + or # and without a leading or trailing "
                            f"/, got {value!r}")
        values[key] = value
      elif key == "client_id":
        values[key] = self.string(value_node, key_path)
      else:  # username, password
        values[key] = self.string(value_node, key_path, optional=True)
    return ServiceMqttConfig(**values)

  def http(self, node: _Node) -> HttpConfig:
    path = "http"
    names = [field.name for field in dataclasses.fields(HttpConfig) if field.name != "token"]
    fields = self.mapping(node, path, names)
    values: Dict[str, Any] = {}
    for key, value_node in fields.items():
      key_path = _join(path, key)
      if key == "host":
        values[key] = self.string(value_node, key_path, empty=False)
      elif key == "port":
        values[key] = self.number(value_node, key_path, integer=True, minimum=0, maximum=65535)
      elif key == "viewer_fps":
        values[key] = self.number(value_node, key_path, above=0.0, maximum=MAX_VIEWER_FPS)
      elif key == "allow_unauthenticated":
        if not isinstance(value_node.value, bool):
          raise self.fail(value_node, key_path,
                          f"expected true or false, got {_type_name(value_node.value)}")
        values[key] = value_node.value
      else:  # token_env
        name = self.string(value_node, key_path) or ""
        if name and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
          raise self.fail(value_node, key_path,
                          f"expected the name of an environment variable, got {name!r}")
        if name:
          token = self.environ.get(name, "")
          if not token:
            raise self.fail(value_node, key_path, f"the variable {name} is not set (or empty)")
          values["token"] = token
        values[key] = name
    http = HttpConfig(**values)
    if not http.loopback and not http.token and not http.allow_unauthenticated:
      raise self.fail(fields.get("host", node), _join(path, "host"),
                      f"{http.host} is not a loopback address: set token_env (the variable "
                      "holding a token every request must carry) or, on a network you trust, "
                      "allow_unauthenticated: true")
    return http

  def masks(self, node: _Node, path: str) -> Tuple[Polygon, ...]:
    if node.value is None:
      return ()
    items = [node] if isinstance(node.value, str) else node.value
    if not isinstance(items, list):
      raise self.fail(node, path, f"expected a list of polygons, got {_type_name(node.value)}")
    polygons = []
    for index, item in enumerate(items):
      item_path = path if item is node else f"{path}[{index}]"
      if isinstance(item.value, str):
        spec: Any = self.substitute(item, item_path, item.value)
      elif isinstance(item.value, list):
        spec = []
        for value in item.value:
          if isinstance(value.value, list):
            spec.append([self._mask_scalar(point, item_path) for point in value.value])
          else:
            spec.append(self._mask_scalar(value, item_path))
      else:
        spec = item.value
      try:
        polygons.append(parse_polygon(spec))
      except errors.ConfigError as error:
        raise self.fail(item, item_path, str(error)) from None
    return tuple(polygons)

  def _mask_scalar(self, node: _Node, path: str) -> Any:
    return self.substitute(node, path, node.value) if isinstance(node.value, str) else node.value

  def input_options(self, node: _Node, path: str) -> Optional[Tuple[Tuple[str, str], ...]]:
    if node.value is None:
      return None
    if node.kind != "mapping":
      raise self.fail(node, path, f"expected a mapping of FFmpeg options (key: value), got "
                      f"{_type_name(node.value)}")
    pairs = []
    for key, (key_node, value_node) in node.value.items():
      if not isinstance(key, str) or not key:
        raise self.fail(key_node, path, f"an option name must be a string, got {key!r}")
      value = value_node.value
      if isinstance(value, str):
        value = self.substitute(value_node, _join(path, key), value)
      elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
      else:
        raise self.fail(value_node, _join(path, key),
                        f"expected a string or a number, got {_type_name(value)}")
      pairs.append((key, value))
    return tuple(pairs)

  def camera(self, name_node: _Node, node: _Node, alarm_defaults: AlarmConfig) -> CameraConfig:
    name = name_node.value
    path = _join("cameras", name)
    if not isinstance(name, str) or not CAMERA_NAME_PATTERN.fullmatch(name):
      hint = " (YAML reads yes/no/on/off/true/false as booleans)" if isinstance(name,
                                                                               bool) else ""
      raise self.fail(name_node, path, "bad camera name: use 1 to 64 of a-z, 0-9, _ and - "
                      f"(it names a folder and MQTT topics){hint}")
    allowed = ["input", "model_dir", "threshold", "masks", "alarm"] + list(DETECTION_KEYS)
    fields = self.mapping(node, path, allowed, required=("input", "model_dir"))
    values: Dict[str, Any] = {"name": name}
    for key, value_node in fields.items():
      key_path = _join(path, key)
      if key in ("input", "model_dir"):
        values[key] = self.string(value_node, key_path, empty=False)
      elif key == "threshold":
        values[key] = self.number(value_node, key_path, optional=True)
      elif key == "masks":
        values[key] = self.masks(value_node, key_path)
      elif key == "alarm":
        values[key] = self.alarm(value_node, key_path, alarm_defaults)
      elif key == "fps":
        values[key] = self.number(value_node, key_path, optional=True, above=0.0)
      elif key in ("read_timeout_s", "reconnect_initial_s", "reconnect_max_s"):
        values[key] = self.number(value_node, key_path, optional=True, above=0.0)
      elif key == "max_reconnects":
        values[key] = self.number(value_node, key_path, optional=True, integer=True, minimum=0)
      elif key == "give_up_after_s":
        values[key] = self.number(value_node, key_path, optional=True, minimum=0.0)
      elif key == "score":
        values[key] = self.string(value_node, key_path, optional=True, empty=False)
      elif key == "smoothing":
        value = self.string(value_node, key_path, optional=True)
        if value is not None:
          try:
            smoothing_lib.CausalSmoother(smoothing_lib.parse(value))
          except errors.ConfigError as error:
            raise self.fail(value_node, key_path, str(error).rstrip(".")) from None
        values[key] = value
      elif key == "rtsp_transport":
        value = self.string(value_node, key_path, optional=True)
        if value is not None and value not in RTSP_TRANSPORTS:
          raise self.fail(value_node, key_path,
                          f"must be one of {', '.join(RTSP_TRANSPORTS)}, got {value!r}")
        values[key] = value
      elif key == "input_options":
        values[key] = self.input_options(value_node, key_path)
    values.setdefault("alarm", alarm_defaults)
    initial, maximum = values.get("reconnect_initial_s"), values.get("reconnect_max_s")
    if initial is not None and maximum is not None and initial > maximum:
      raise self.fail(fields["reconnect_initial_s"], _join(path, "reconnect_initial_s"),
                      f"must be <= reconnect_max_s ({maximum:g}), got {initial:g}")
    return CameraConfig(**values)

  def parse(self) -> ServiceConfig:
    root = self.compose()
    if root is None or root.kind != "mapping":
      raise self.fail(root, "", "the configuration must be a mapping with the keys 'cameras' "
                      "and 'record'")
    top = self.mapping(root, "", ["cameras", "record", "mqtt", "alarm", "http"],
                       required=("record",), extensions=True)
    alarm_defaults = self.alarm(top.get("alarm"), "alarm", AlarmConfig())
    cameras_node = top.get("cameras")
    if cameras_node is None or cameras_node.value is None or cameras_node.value == {}:
      raise self.fail(cameras_node or root, "cameras", "no camera configured")
    if cameras_node.kind != "mapping":
      raise self.fail(cameras_node, "cameras", "expected a mapping of camera name to camera, "
                      f"got {_type_name(cameras_node.value)}")
    cameras = tuple(self.camera(name_node, node, alarm_defaults)
                    for name_node, node in cameras_node.value.values())
    record = self.record(top["record"])
    mqtt_node = top.get("mqtt")
    mqtt = None if mqtt_node is None or mqtt_node.value is None else self.mqtt(mqtt_node)
    http_node = top.get("http")
    http = None if http_node is None or http_node.value is None else self.http(http_node)
    return ServiceConfig(cameras=cameras, record=record, mqtt=mqtt, alarm=alarm_defaults,
                         http=http,
                         source_name=self.source_name,
                         substituted_secrets=frozenset(self.secrets))


def _join(path: str, key: Any) -> str:
  return f"{path}.{key}" if path else str(key)


def parse(text: str, environ: Mapping[str, str] = os.environ,
          source_name: str = "<config>") -> ServiceConfig:
  """A ServiceConfig from YAML text.

  Args:
    text: the YAML.
    environ: where ${VAR} come from.
    source_name: the file name used in messages.

  Raises:
    ServiceConfigError (an errors.ConfigError): one line, `<source>:<line>:<col>: <key path>:
      <problem>`.
  """
  return _Parser(text, environ, source_name).parse()


def load(path: str, environ: Mapping[str, str] = os.environ) -> ServiceConfig:
  """parse() of a local file (read with open(), not fileio: this module imports no
  TensorFlow); an unreadable file is a ServiceConfigError too."""
  try:
    with open(path, encoding="utf-8") as file:
      text = file.read()
  except (OSError, UnicodeDecodeError) as error:
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    raise ServiceConfigError(f"{path}: cannot read the configuration: {reason}") from None
  return parse(text, environ, path)
