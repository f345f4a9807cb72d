"""The service's YAML configuration: a full file, defaults, variables, one-line errors that name
the place and key, and secrets kept out of reprs and logs."""

import dataclasses
import logging
import textwrap

import pytest

from daml_tf import errors
from daml_tf.service import config

ENV = {"GATE_USER": "admin", "GATE_PASSWORD": "hunter2", "MQTT_USER": "daml",
       "MQTT_PASSWORD": "mq-secret"}

FULL = """\
cameras:
  gate:
    input: rtsp://${GATE_USER}:${GATE_PASSWORD}@10.0.0.5/stream2
    model_dir: runs/gate
    threshold: 0.084
    masks: ["0,0,0.3,0,0.3,0.2,0,0.2", [0.5, 0.5, 1, 0.5, 1, 1]]
    fps: 10
    score: latent_mean
    smoothing: "ma:3"
    read_timeout_s: 10
    reconnect_initial_s: 1
    reconnect_max_s: 30
    max_reconnects: null
    give_up_after_s: null
    rtsp_transport: tcp
    input_options: {video_size: 640x480, framerate: 30}
    alarm:
      min_frames: 5
  yard:
    input: /dev/video0
    model_dir: runs/yard
record:
  output_dir: /var/lib/daml
  max_disk_mb: 512
mqtt:
  host: 127.0.0.1
  username: ${MQTT_USER}
  password: ${MQTT_PASSWORD}
  port: ${MQTT_PORT:-1884}
alarm:
  cooldown_s: 2
"""

MINIMAL = """\
cameras:
  gate:
    input: rtsp://10.0.0.5/stream2
    model_dir: runs/gate
record:
  output_dir: /var/lib/daml
"""


def parse(text, environ=None):
  return config.parse(textwrap.dedent(text), ENV if environ is None else environ, "cameras.yaml")


def error_of(text, environ=None) -> str:
  with pytest.raises(errors.ConfigError) as raised:
    parse(text, environ)
  message = str(raised.value)
  assert "\n" not in message
  return message


def test_full_file():
  cfg = parse(FULL)
  gate, yard = cfg.cameras
  assert gate.name == "gate" and yard.name == "yard"
  assert gate.input == "rtsp://admin:hunter2@10.0.0.5/stream2"
  assert gate.threshold == 0.084
  assert gate.masks == (((0.0, 0.0), (0.3, 0.0), (0.3, 0.2), (0.0, 0.2)),
                        ((0.5, 0.5), (1.0, 0.5), (1.0, 1.0)))
  assert gate.detection_overrides() == {
      "fps": 10.0, "score": "latent_mean", "smoothing": "ma:3", "read_timeout_s": 10.0,
      "reconnect_initial_s": 1.0, "reconnect_max_s": 30.0, "rtsp_transport": "tcp",
      "input_options": (("video_size", "640x480"), ("framerate", "30"))}
  # The camera's alarm overrides the top-level one key by key.
  assert gate.alarm == config.AlarmConfig(min_frames=5, cooldown_s=2.0)
  assert yard.alarm == cfg.alarm == config.AlarmConfig(cooldown_s=2.0)
  assert cfg.record.max_disk_bytes == 512 * 1024 * 1024
  assert cfg.mqtt == config.ServiceMqttConfig(host="127.0.0.1", port=1884, username="daml",
                                              password="mq-secret")
  assert cfg.camera("yard") is yard


def test_defaults():
  cfg = parse(MINIMAL, {})
  camera = cfg.cameras[0]
  assert camera.threshold is None and camera.masks == () and camera.detection_overrides() == {}
  assert camera.alarm == config.AlarmConfig()
  assert cfg.record == config.RecordConfig(output_dir="/var/lib/daml", pre_capture_s=5.0,
                                           post_capture_s=5.0, retain_days=10.0,
                                           max_disk_mb=None, snapshot_quality=90)
  assert cfg.mqtt is None


def test_mqtt_defaults():
  cfg = parse(MINIMAL + "mqtt:\n  host: broker\n", {})
  assert cfg.mqtt == config.ServiceMqttConfig(
      host="broker", port=1883, topic_prefix="daml", client_id="", username=None,
      password=None, discovery_prefix="homeassistant", qos=1)


def test_load_reads_a_file(tmp_path):
  path = tmp_path / "cameras.yaml"
  path.write_text(FULL)
  cfg = config.load(str(path), ENV)
  assert cfg.source_name == str(path)
  assert dataclasses.replace(cfg, source_name="cameras.yaml") == parse(FULL)
  with pytest.raises(errors.ConfigError, match="cannot read"):
    config.load(str(tmp_path / "missing.yaml"), ENV)


def test_variables_are_substituted_after_parsing():
  # A value that looks like YAML structure stays one string.
  text = MINIMAL.replace("runs/gate", "${MODEL}")
  cfg = parse(text, {"MODEL": "x\nrecord: {output_dir: /tmp}"})
  assert cfg.cameras[0].model_dir == "x\nrecord: {output_dir: /tmp}"
  assert cfg.record.output_dir == "/var/lib/daml"
  # Defaults for unset or empty variables; $${ is a literal ${.
  cfg = parse(MINIMAL.replace("runs/gate", "${MODEL:-runs/default}/$${X}"), {"MODEL": ""})
  assert cfg.cameras[0].model_dir == "runs/default/${X}"


def test_yaml_anchors_and_merge_keys():
  cfg = parse("""\
      x-defaults: &defaults
        model_dir: runs/shared
        fps: 5
      cameras:
        gate:
          <<: *defaults
          input: a.mp4
          fps: 7
      record: {output_dir: out}
      """, {})
  assert cfg.cameras[0].model_dir == "runs/shared" and cfg.cameras[0].fps == 7.0


@pytest.mark.parametrize("text, expected", [
    (MINIMAL.replace("    model_dir: runs/gate\n", ""),
     "cameras.yaml:3:5: cameras.gate.model_dir: missing"),
    (MINIMAL.replace("model_dir", "modle_dir"),
     "cameras.yaml:4:5: cameras.gate.modle_dir: unknown key (did you mean 'model_dir'?)"),
    (MINIMAL + "mqtt:\n  host: h\n  prot: 1\n",
     "cameras.yaml:9:3: mqtt.prot: unknown key (did you mean 'port'?)"),
    (MINIMAL + "recrod: {}\n", "cameras.yaml:7:1: recrod: unknown key (did you mean 'record'?)"),
    (MINIMAL + "  pre_capture_s: abc\n",
     "cameras.yaml:7:18: record.pre_capture_s: expected a number, got 'abc'"),
    (MINIMAL + "  snapshot_quality: 101\n",
     "record.snapshot_quality: must be <= 100, got 101"),
    (MINIMAL + "  snapshot_quality: 9.5\n",
     "record.snapshot_quality: expected a whole number, got 9.5"),
    (MINIMAL + "  retain_days: 0\n", "record.retain_days: must be > 0, got 0"),
    (MINIMAL + "  pre_capture_s: true\n", "record.pre_capture_s: expected a number, got True"),
    (MINIMAL.replace("record:\n  output_dir: /var/lib/daml\n", ""), "record: missing"),
    ("cameras: {}\nrecord: {output_dir: out}\n", "cameras.yaml:1:10: cameras: no camera "
     "configured"),
    ("record: {output_dir: out}\n", "cameras: no camera configured"),
    ("cameras: [a, b]\nrecord: {output_dir: out}\n", "cameras: expected a mapping"),
    (MINIMAL.replace("gate:", "Gate:"), "cameras.yaml:2:3: cameras.Gate: bad camera name"),
    (MINIMAL.replace("gate:", "on:"), "booleans"),
    (MINIMAL.replace("runs/gate", "runs/gate\n    masks: ['0,0,1,0,1,1,0']"),
     "cameras.gate.masks[0]: a polygon needs an even number of values, got 7"),
    (MINIMAL.replace("runs/gate", "runs/gate\n    masks: ['0,0,1.5,0,1,1']"),
     "cameras.gate.masks[0]: values must lie in 0-1"),
    (MINIMAL.replace("runs/gate", "runs/gate\n    masks: [[0, 0, 1, 1]]"),
     "cameras.gate.masks[0]: a polygon needs at least 3 points, got 2"),
    (MINIMAL.replace("runs/gate", "runs/gate\n    masks: ['0,0,x,0,1,1']"),
     "cameras.gate.masks[0]: expected a number, got 'x'"),
    (MINIMAL.replace("runs/gate", "runs/gate\n    smoothing: gauss:2"),
     "cameras.gate.smoothing: smoothing gauss:2 looks at later frames"),
    (MINIMAL.replace("runs/gate", "runs/gate\n    rtsp_transport: quic"),
     "cameras.gate.rtsp_transport: must be one of"),
    (MINIMAL.replace("runs/gate", "runs/gate\n    reconnect_initial_s: 60\n"
                     "    reconnect_max_s: 30"),
     "cameras.gate.reconnect_initial_s: must be <= reconnect_max_s (30), got 60"),
    (MINIMAL.replace("runs/gate", "runs/gate\n    alarm: {end_ratio: 1.5}"),
     "cameras.gate.alarm.end_ratio: must be <= 1, got 1.5"),
    (MINIMAL + "alarm: {min_frames: 0}\n", "alarm.min_frames: must be >= 1, got 0"),
    (MINIMAL + "mqtt: {host: h, qos: 3}\n", "mqtt.qos: must be <= 2, got 3"),
    (MINIMAL + "mqtt: {host: h, topic_prefix: a/#}\n", "mqtt.topic_prefix: must be a topic"),
    (MINIMAL + "mqtt: {port: 1}\n", "mqtt.host: missing"),
    (MINIMAL + "mqtt: {host: h, password: 123456}\n",
     "mqtt.password: expected a string, got 123456 (quote it)"),
    (MINIMAL.replace("runs/gate", "''"), "cameras.gate.model_dir: must not be empty"),
    (MINIMAL + "record: {output_dir: b}\n", "cameras.yaml:7:1: duplicate key 'record'"),
    (MINIMAL.replace("runs/gate", "runs/gate\n    model_dir: b"),
     "cameras.yaml:5:5: duplicate key 'model_dir'"),
    (MINIMAL + "  snapshot_quality: !!int abc\n",
     "cameras.yaml:7:21: YAML syntax error: 'abc' is not a valid int"),
    (MINIMAL + "  x: \x07\n", "cameras.yaml:7:6: YAML syntax error: unacceptable character"),
    ("a: &x [*x]\n", "cameras.yaml:1:4: YAML syntax error: an alias refers to a value that "
     "contains it"),
    (MINIMAL + "---\na: 1\n", "cameras.yaml:7:1: YAML syntax error: expected a single document"),
    ("- a\n- b\n", "must be a mapping with the keys 'cameras' and 'record'"),
    ("", "must be a mapping"),
])
def test_errors_name_the_place_and_key(text, expected):
  assert expected in error_of(text, {})


def test_missing_variable():
  text = MINIMAL.replace("rtsp://10.0.0.5", "rtsp://${GATE_USER}:${GATE_PASSWORD}@10.0.0.5")
  assert error_of(text, {"GATE_USER": "u"}) == (
      "cameras.yaml:3:12: cameras.gate.input: ${GATE_PASSWORD} is not set in the environment")
  assert "bad variable reference" in error_of(MINIMAL.replace("runs/gate", "${1X}"), {})


def test_yaml_syntax_error_has_line_and_column():
  text = "cameras:\n  gate:\n    input: a\n    model_dir: [b\nrecord: {}\n"
  message = error_of(text, {})
  assert message.startswith("cameras.yaml:5:7: YAML syntax error: ")
  assert error_of("cameras:\n\tgate: 1\n", {}).startswith("cameras.yaml:2:1: YAML syntax error")


def test_numbers_from_variables():
  cfg = parse(MINIMAL + "  max_disk_mb: ${BUDGET:-}\n  retain_days: ${DAYS}\n", {"DAYS": "3"})
  assert cfg.record.max_disk_mb is None and cfg.record.retain_days == 3.0
  assert "record.retain_days: expected a number, got 'x' (from '${DAYS}')" in error_of(
      MINIMAL + "  retain_days: ${DAYS}\n", {"DAYS": "x"})


@pytest.mark.parametrize("spec, expected", [
    ("0,0, 1,0, 1,1", ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0))),
    ([0, 0, 1, 0, 0.5, 1], ((0.0, 0.0), (1.0, 0.0), (0.5, 1.0))),
    ([[0, 0], [1, 0], [0.5, 1]], ((0.0, 0.0), (1.0, 0.0), (0.5, 1.0))),
])
def test_parse_polygon(spec, expected):
  assert config.parse_polygon(spec) == expected


@pytest.mark.parametrize("text, expected", [
    ("rtsp://user:pass@host/stream", "rtsp://user:***@host/stream"),
    ("rtsp://host/stream", "rtsp://host/stream"),
    ("rtsp://user@host/stream", "rtsp://user@host/stream"),
    ("opening 'rtsp://a:b%40c@10.0.0.5:554/s' failed",
     "opening 'rtsp://a:***@10.0.0.5:554/s' failed"),
    ("rtsp://u:pa/ss@host/s", "rtsp://u:***@host/s"),
    ("http://host/a?token=abc&x=1", "http://host/a?token=***&x=1"),
    ("http://host:8080/p?email=a@b.c", "http://host:8080/p?email=a@b.c"),
])
def test_redact(text, expected):
  assert config.redact(text) == expected


def test_secrets_never_in_repr():
  cfg = parse(FULL)
  for text in (repr(cfg), repr(cfg.cameras[0]), str(cfg), repr(cfg.mqtt)):
    assert "hunter2" not in text and "mq-secret" not in text
  assert cfg.cameras[0].display_input == "rtsp://admin:***@10.0.0.5/stream2"


def test_secret_values():
  cfg = parse(FULL.replace("10.0.0.5", "${GATE_HOST}") + "x-note: ${API_TOKEN}\n",
              dict(ENV, GATE_HOST="10.0.0.9", API_TOKEN="tok"))
  # Not API_TOKEN: x- keys are ignored, variables and all.
  assert config.secret_values(cfg) == {"hunter2", "mq-secret"}
  # A URL password is secret whatever its variable's name, and as written in the file.
  cfg = parse(MINIMAL.replace("rtsp://", "rtsp://u:${GATE_PW_1}@").replace(
      "runs/gate", "runs/gate\n    input_options: {auth_key: '${OPTS_KEY}'}"),
              {"GATE_PW_1": "p%40ss", "OPTS_KEY": "k3y"})
  assert config.secret_values(cfg) == {"p%40ss", "p@ss", "k3y"}


def test_redacting_filter_hides_secrets_in_messages_and_tracebacks():
  records = []

  class Collect(logging.Handler):

    def emit(self, record):
      records.append(self.format(record))

  handler = Collect()
  handler.addFilter(config.RedactingFilter({"hunter2", "mq-secret"}))
  logger = logging.getLogger("test_service_config.child")
  logger.addHandler(handler)
  logger.propagate = False
  try:
    logger.warning("opening %s with %s", "rtsp://admin:hunter2@h/s", "mq-secret")
    logger.warning("url rtsp://x:other@h/s")
    try:
      raise RuntimeError("bad password hunter2")
    except RuntimeError:
      logger.exception("failed")
  finally:
    logger.removeHandler(handler)
  assert records[0] == "opening rtsp://admin:***@h/s with ***"
  assert records[1] == "url rtsp://x:***@h/s"
  assert "hunter2" not in records[2] and "bad password ***" in records[2]


def test_install_redaction_covers_absl_handler():
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  redacting = config.install_redaction({"hunter2"})
  try:
    assert redacting in absl_logging.get_absl_handler().filters
    assert redacting in logging.getLogger().filters
  finally:
    absl_logging.get_absl_handler().removeFilter(redacting)
    root = logging.getLogger()
    root.removeFilter(redacting)
    for handler in root.handlers:
      handler.removeFilter(redacting)
