"""The service's page and HTTP API (`http:` in its YAML), on a running `python -m daml_tf.serve`
fed by a stand-in camera (ffmpeg looping an H.264 video as MPEG-TS over UDP on 127.0.0.1):
every endpoint, paths that try to leave the output folder, the token off loopback, /healthz
going stale, Prometheus metrics, a stalled viewer that must not slow detection, and the page
in a real browser (headless Chromium)."""

import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import av
import numpy as np
from PIL import Image
from prometheus_client import parser as prometheus_parser
import pytest
import yaml

import testing

REPO = testing.REPO
FPS = 10
LOOP_FRAMES = 50  # As test_serve: the looping stream wraps around without a scene change.
FRAME_SIZE = (144, 256)  # A picture a person can read in the screenshot; even (H.264).
ALARM = {"min_frames": 1, "end_ratio": 1.0, "cooldown_s": 0}
TOKEN = "tk-9Vw2RrQx7LpZ"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT_ENV = "DAML_SERVICE_SCREENSHOT"
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                  reason="no ffmpeg CLI (`make test` installs it)")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("model")
  testing.make_run(path, {"threshold": 0.5, "quantile": 0.9})
  return str(path)


@pytest.fixture(scope="module")
def stream(model_dir, tmp_path_factory):
  """(the looping camera video, a threshold that its scores cross both ways)."""
  return testing.looping_stream(model_dir, tmp_path_factory.mktemp("stream"), LOOP_FRAMES,
                                FRAME_SIZE, FPS)


class Service:
  """`python -m daml_tf.serve` with an http: section and one UDP stand-in camera per name."""

  def __init__(self, folder, model_dir, stream, http, names=("gate",), env=None, camera=None):
    video, threshold = stream
    self.folder = folder
    self.output_dir = folder / "out"
    self.senders = {}
    cameras = {}
    for name, port in zip(names, testing.free_ports(len(names), socket.SOCK_DGRAM)):
      url = f"udp://127.0.0.1:{port}"
      self.senders[name] = testing.serve_ffmpeg(video, url, loop=True)
      cameras[name] = dict({"input": url, "model_dir": model_dir, "threshold": threshold,
                            "fps": FPS}, **(camera or {}))
    self.port = testing.free_port()
    config = folder / "cameras.yaml"
    config.write_text(yaml.safe_dump({
        "cameras": cameras, "alarm": ALARM,
        "record": {"output_dir": str(self.output_dir), "pre_capture_s": 1, "post_capture_s": 1},
        "http": dict(http, port=self.port)}, sort_keys=False))
    self.err = folder / "serve.err"
    with open(folder / "serve.out", "w") as out, open(self.err, "w") as err:
      self.process = subprocess.Popen(
          [sys.executable, "-m", "daml_tf.serve", f"--config={config}", "--log_every=0"],
          cwd=REPO, env=dict(os.environ, **(env or {})), stdout=out, stderr=err,
          stdin=subprocess.DEVNULL)
    self.base = f"http://127.0.0.1:{self.port}"

  def get(self, path, headers=None, timeout=10):
    """(status, headers, body) of a GET; an HTTP error status is returned, not raised."""
    request = urllib.request.Request(self.base + path, headers=headers or {})
    try:
      with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
      return error.code, error.headers, error.read()

  def json(self, path, **kwargs):
    status, _, body = self.get(path, **kwargs)
    assert status == 200, (path, status, body[:300])
    return json.loads(body)

  def wait_healthy(self, timeout_s=180, headers=None):
    def healthy():
      try:
        return self.get("/healthz", headers=headers, timeout=2)[0] == 200
      except OSError:
        return False
    testing.wait_until(healthy, timeout_s, "/healthz 200", poll_s=0.5, process=self.process)

  def stop(self):
    try:
      if self.process.poll() is None:
        self.process.send_signal(signal.SIGTERM)
        try:
          self.process.wait(60)
        except subprocess.TimeoutExpired:
          self.process.kill()
          self.process.wait()
    finally:
      for sender in self.senders.values():
        testing.stop_server(sender)
    return self.err.read_text()


@pytest.fixture(scope="module")
def live(model_dir, stream, tmp_path_factory):
  """One service on 127.0.0.1 with the camera `gate`, running for the module's tests."""
  if shutil.which("ffmpeg") is None:
    pytest.skip("no ffmpeg CLI (`make test` installs it)")
  service = Service(tmp_path_factory.mktemp("live"), model_dir, stream,
                    {"host": "127.0.0.1", "viewer_fps": 5})
  try:
    service.wait_healthy()
    yield service
  finally:
    stderr = service.stop()
    assert "Traceback" not in stderr, stderr[-5000:]


def _metrics(service, headers=None):
  """{(name, camera label or None): value} of /metrics, parsed by prometheus_client."""
  status, _, body = service.get("/metrics", headers=headers)
  assert status == 200
  values = {}
  for family in prometheus_parser.text_string_to_metric_families(body.decode()):
    for sample in family.samples:
      values[(sample.name, sample.labels.get("camera"))] = sample.value
  return values


def _wait_for_event(service, done, timeout_s=60, what="an event"):
  """The newest event (API shape) for which done(event) holds."""
  found = []

  def check():
    events = service.json("/api/events?camera=gate&limit=20")
    found[:] = [e for e in events if done(e)]
    return bool(found)
  testing.wait_until(check, timeout_s, what, poll_s=0.5, process=service.process)
  return found[0]


def _mjpeg_parts(response, count, timeout_s=20):
  """The first `count` JPEGs of a multipart/x-mixed-replace response."""
  parts, deadline = [], time.monotonic() + timeout_s
  while len(parts) < count and time.monotonic() < deadline:
    line = response.readline()
    if line.lower().startswith(b"content-length:"):
      length = int(line.split(b":")[1])
      response.readline()  # The blank line after the part's headers.
      parts.append(response.read(length))
  return parts


# ------------------------------------------------------------------------------------------
# The configuration.


def test_http_section_defaults_errors_and_secrets():
  from daml_tf import errors  # pylint: disable=g-import-not-at-top
  from daml_tf.service import config  # pylint: disable=g-import-not-at-top
  base = ("cameras:\n  gate: {input: rtsp://10.0.0.5/s, model_dir: runs/gate}\n"
          "record: {output_dir: /tmp/out}\n")
  assert config.parse(base).http is None
  http = config.parse(base + "http: {}\n").http
  assert (http.host, http.port, http.token, http.viewer_fps) == ("127.0.0.1", 8080, "", 4.0)
  with pytest.raises(errors.ConfigError, match=r"<config>:5:9: http.host: 0.0.0.0 is not a "
                     "loopback address: set token_env"):
    config.parse(base + "http:\n  host: 0.0.0.0\n")
  with pytest.raises(errors.ConfigError, match=r"http.token_env: the variable DAML_T is not set"):
    config.parse(base + "http: {host: 0.0.0.0, token_env: DAML_T}\n", environ={})
  with pytest.raises(errors.ConfigError, match=r"http.prot: unknown key \(did you mean 'port'"):
    config.parse(base + "http: {prot: 80}\n")
  with pytest.raises(errors.ConfigError, match=r"http.viewer_fps: must be <= 15"):
    config.parse(base + "http: {viewer_fps: 30}\n")
  open_cfg = config.parse(base + "http: {host: 0.0.0.0, allow_unauthenticated: true}\n")
  assert open_cfg.http.allow_unauthenticated and not open_cfg.http.token
  secured = config.parse(base + "http: {host: 0.0.0.0, token_env: DAML_T, port: 9000}\n",
                         environ={"DAML_T": TOKEN})
  assert secured.http.token == TOKEN and secured.http.port == 9000
  assert TOKEN not in repr(secured) and TOKEN in config.secret_values(secured)


# ------------------------------------------------------------------------------------------
# A running service.


@pytest.mark.slow
def test_cameras_health_latest_picture_and_mjpeg_encoded_only_while_watched(live):
  cameras = live.json("/api/cameras")
  gate = cameras["gate"]
  assert gate["frames"] > 0 and gate["camera_fps"] > 0 and gate["online"] is True
  assert gate["last_frame_age_s"] < 2 and gate["reconnects"] == 0
  assert gate["stream"] == "/api/gate/stream.mjpeg" and gate["threshold"] > 0
  assert live.json("/healthz") == {"status": "ok"}
  status, headers, body = live.get("/api/gate/latest.jpg")
  assert status == 200 and headers["Content-Type"] == "image/jpeg"
  assert Image.open(io.BytesIO(body)).size == (FRAME_SIZE[1], FRAME_SIZE[0])
  assert live.get("/api/nosuch/latest.jpg")[0] == 404

  connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=20)
  connection.request("GET", "/api/gate/stream.mjpeg")
  response = connection.getresponse()
  assert response.status == 200
  assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace")
  parts = _mjpeg_parts(response, 3)
  assert len(parts) == 3 and len(set(parts)) == 3  # New frames, each a JPEG of the camera.
  assert {Image.open(io.BytesIO(p)).size for p in parts} == {(FRAME_SIZE[1], FRAME_SIZE[0])}
  assert live.json("/api/cameras")["gate"]["viewers"] == 1
  connection.close()
  testing.wait_until(lambda: live.json("/api/cameras")["gate"]["viewers"] == 0, 10,
                     "the viewer to leave")
  # No viewer: no more pictures are encoded.
  encoded = _metrics(live)[("daml_camera_live_jpegs_total", "gate")]
  time.sleep(2)
  assert _metrics(live)[("daml_camera_live_jpegs_total", "gate")] == encoded


@pytest.mark.slow
def test_scores_arrive_as_server_sent_events(live):
  connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=20)
  connection.request("GET", "/api/gate/scores")
  response = connection.getresponse()
  assert response.headers["Content-Type"].startswith("text/event-stream")
  messages, kind, deadline = [], None, time.monotonic() + 15
  while time.monotonic() < deadline and sum(k == "state" for k, _ in messages) < 2:
    line = response.readline().decode().rstrip("\n")
    if line.startswith("event: "):
      kind = line[len("event: "):]
    elif line.startswith("data: "):
      messages.append((kind, json.loads(line[len("data: "):])))
  connection.close()
  kinds = [k for k, _ in messages]
  assert kinds[0] == "hello" and messages[0][1]["camera"] == "gate", kinds
  points = [p for k, data in messages if k == "scores" for p in data]
  assert len(points) > 5 and any(p["score"] is not None for p in points)
  assert set(points[0]) == {"t", "score", "alarm"}
  assert [t for t in (p["t"] for p in points)] == sorted(p["t"] for p in points)
  state = [data for k, data in messages if k == "state"][-1]
  assert state["frames"] > 0 and state["camera_fps"] > 0


@pytest.mark.slow
def test_events_with_snapshot_and_clip_in_frigate_shape(live):
  event = _wait_for_event(live, lambda e: e["end_time"] is not None and e["has_clip"]
                          and e["has_snapshot"], what="an ended alarm with its clip")
  assert event["camera"] == "gate" and event["label"] == "anomaly"
  assert event["start_time"] <= event["end_time"] and event["top_score"] >= event["threshold"]
  assert {"id", "box", "data", "score", "snapshot_url", "clip_url", "end_reason"} <= set(event)
  assert live.json(f"/api/events/{event['id']}") == event
  status, headers, body = live.get(event["snapshot_url"])
  assert status == 200 and headers["Content-Type"] == "image/jpeg"
  assert Image.open(io.BytesIO(body)).size == (FRAME_SIZE[1], FRAME_SIZE[0])
  status, headers, body = live.get(event["clip_url"])
  assert status == 200 and headers["Content-Type"] == "video/mp4"
  with av.open(io.BytesIO(body)) as container:
    assert sum(1 for _ in container.decode(video=0)) > 0
  # Frigate's filters: start_time after / before, limit; newest first.
  everything = live.json("/api/events?limit=1000")
  starts = [e["start_time"] for e in everything]
  assert starts == sorted(starts, reverse=True) and event["id"] in {e["id"] for e in everything}
  assert len(live.json("/api/events?limit=1")) == 1
  assert all(e["start_time"] > event["start_time"]
             for e in live.json(f"/api/events?after={event['start_time']}"))
  assert all(e["start_time"] < event["start_time"]
             for e in live.json(f"/api/events?before={event['start_time']}"))
  assert live.json("/api/events?camera=nosuch") == []
  assert live.get("/api/events?limit=x")[0] == 400


@pytest.mark.slow
def test_ids_and_names_that_leave_the_output_folder_are_404(live):
  (live.output_dir / "secret.txt").write_text("SECRET-CONTENT")
  (live.folder / "outside.txt").write_text("SECRET-CONTENT")
  event = _wait_for_event(live, lambda e: e["has_snapshot"], what="an event with a snapshot")
  real = f"/api/events/{event['id']}/snapshot.jpg"
  paths = [
      "/api/events/../secret.txt", "/api/events/..%2Fsecret.txt",
      "/api/events/%2e%2e/snapshot.jpg", "/api/events/%2E%2E%2F%2E%2E%2Fsecret.txt/snapshot.jpg",
      "/api/events/..%2F..%2Foutside.txt/snapshot.jpg", f"/api/events/{live.folder}/outside.txt",
      "/api/events/%2Fetc%2Fpasswd/snapshot.jpg", "/api/events//etc/passwd",
      f"/api/events/{event['id']}/..%2F..%2F..%2Fsecret.txt",
      f"/api/events/{event['id']}/../../../secret.txt", f"/api/events/{event['id']}/snapshot-clean.jpg",
      f"/api/events/{event['id']}%2F..%2F..%2F..%2Fsecret.txt/snapshot.jpg",
      "/api/events/1718000000.500000-zzzzzz", "/api/events/1718000000.500000-zzzzzz/clip.mp4",
      "/api/events/not-an-id/snapshot.jpg", "/api/..%2Fsecret.txt/latest.jpg",
      "/api/%2e%2e/latest.jpg", "/api/gate%2F..%2F..%2Fsecret.txt/latest.jpg",
      "/api/..%2F..%2Foutside.txt/stream.mjpeg", "/static/..%2F..%2F..%2Fserver.py",
      "/static/../server.py", "/api/GATE/latest.jpg",
  ]
  for path in paths:
    # http.client sends the path as written: no client-side normalization of .. or %2F.
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 404, (path, response.status, body[:200])
    assert b"SECRET" not in body and b"import" not in body, path
  assert live.get(real)[0] == 200


@pytest.mark.slow
def test_metrics_in_prometheus_format(live):
  _wait_for_event(live, lambda e: True, what="an alarm")
  values = _metrics(live)
  for name in ("daml_camera_fps", "daml_camera_frames_total", "daml_camera_dropped_frames_total",
               "daml_camera_score", "daml_camera_alarm", "daml_camera_alarms_total",
               "daml_camera_events_total", "daml_camera_gaps_total",
               "daml_camera_reconnects_total", "daml_camera_last_frame_timestamp_seconds",
               "daml_camera_viewers", "daml_camera_live_jpegs_total"):
    assert (name, "gate") in values, name
  assert values[("daml_camera_frames_total", "gate")] > 0
  assert values[("daml_camera_alarms_total", "gate")] >= 1
  assert abs(values[("daml_camera_last_frame_timestamp_seconds", "gate")] - time.time()) < 10
  assert values[("daml_inference_seconds_count", None)] > 0
  assert values[("daml_inference_seconds_bucket", None)] >= 0
  assert ("daml_http_dropped_clients_total", None) in values
  # No MQTT in this file: no MQTT families.
  assert not any(name.startswith("daml_mqtt") for name, _ in values)


def _frames_per_second(service, seconds):
  start = service.json("/api/cameras")["gate"]["frames"]
  time.sleep(seconds)
  return (service.json("/api/cameras")["gate"]["frames"] - start) / seconds


def _stalled_client(port, path):
  """A socket that asks for `path` and then never reads (a receive buffer as small as the
  kernel allows, so the server's writes back up as soon as possible)."""
  sock = socket.socket()
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
  sock.connect(("127.0.0.1", port))
  sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
  return sock


@pytest.mark.slow
def test_a_stalled_viewer_does_not_slow_detection(live):
  """Frame processing goes on at the camera's rate while clients that never read hold the
  MJPEG and score streams (the camera delivers FPS; the service keeps up with it either way)."""
  baseline = _frames_per_second(live, 5)
  stalled = [_stalled_client(live.port, path) for path in
             ("/api/gate/stream.mjpeg",) * 3 + ("/api/gate/scores",)]
  try:
    testing.wait_until(lambda: live.json("/api/cameras")["gate"]["viewers"] >= 3, 10,
                       "the stalled viewers")
    during = _frames_per_second(live, 5)
    assert live.get("/healthz")[0] == 200
  finally:
    for sock in stalled:
      sock.close()
  assert baseline > 0.7 * FPS, baseline
  assert during >= 0.8 * baseline, (baseline, during)


def test_a_client_that_stops_reading_is_dropped(monkeypatch):
  """The web server alone (no model): a feed of big noisy frames, one client that never reads
  the MJPEG stream and one that does; the stalled one is dropped after SEND_TIMEOUT_S, the
  reader keeps getting pictures, and the feed's writer is never held up."""
  from daml_tf.inference.streaming import FrameResult  # pylint: disable=g-import-not-at-top
  from daml_tf.service import config  # pylint: disable=g-import-not-at-top
  from daml_tf.service.web import events, hub, server  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(server, "SEND_TIMEOUT_S", 1.0)
  feed = hub.CameraFeed("gate", lambda frame, result: frame, 1.0, max_fps=15)
  the_hub = hub.Hub([feed])
  status = lambda: {"gate": {"frames": 0, "dropped": 0, "last_frame_age_s": 0.0,
                             "read_timeout_s": 10, "reconnects": 0, "gaps": 0, "alarms": 0,
                             "events": 0, "online": True, "stopped": None}}
  web = server.WebServer(server.WebApp(
      config.HttpConfig(port=0, viewer_fps=15), the_hub,
      events.EventStore("/nonexistent", ["gate"]), status)).start()
  rng = np.random.default_rng(0)
  frames = [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(4)]
  stop = threading.Event()
  slowest = []

  def camera():
    i = 0
    while not stop.is_set():
      began = time.perf_counter()
      feed.frame(time.time(), frames[i % 4], FrameResult(index=i, score=0.1, smoothed=0.1,
                                                         alarm=False))
      slowest.append(time.perf_counter() - began)
      i += 1
      time.sleep(0.02)

  writer = threading.Thread(target=camera, daemon=True)
  writer.start()
  stalled = _stalled_client(web.port, "/api/gate/stream.mjpeg")
  try:
    testing.wait_until(lambda: web.web_app.dropped_clients >= 1, 30, "the stalled client dropped")
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=20)
    connection.request("GET", "/api/gate/stream.mjpeg")
    assert len(_mjpeg_parts(connection.getresponse(), 2)) == 2
    connection.close()
  finally:
    stop.set()
    writer.join()
    stalled.close()
    web.stop()
  assert max(slowest) < 0.05, max(slowest)


def test_pictures_are_encoded_at_most_viewer_fps_however_many_watch():
  """Four viewers of a camera delivering 50 frames/s with viewer_fps 4: about 4 pictures a
  second are encoded, shared by the viewers; none once they have left."""
  from daml_tf.inference.streaming import FrameResult  # pylint: disable=g-import-not-at-top
  from daml_tf.service import config  # pylint: disable=g-import-not-at-top
  from daml_tf.service.web import events, hub, server  # pylint: disable=g-import-not-at-top
  feed = hub.CameraFeed("gate", lambda frame, result: frame, 1.0, max_fps=4)
  status = lambda: {"gate": {"frames": 0, "dropped": 0, "last_frame_age_s": 0.0,
                             "read_timeout_s": 10, "reconnects": 0, "gaps": 0, "alarms": 0,
                             "events": 0, "online": True, "stopped": None}}
  web = server.WebServer(server.WebApp(
      config.HttpConfig(port=0, viewer_fps=4), hub.Hub([feed]),
      events.EventStore("/nonexistent", ["gate"]), status)).start()
  stop = threading.Event()
  frame = np.full((48, 64, 3), 100, np.uint8)

  def camera():
    i = 0
    while not stop.is_set():
      feed.frame(time.time(), frame, FrameResult(index=i, score=0.1, smoothed=0.1, alarm=False))
      i += 1
      time.sleep(0.02)

  writer = threading.Thread(target=camera, daemon=True)
  writer.start()
  connections, parts = [], []
  try:
    for _ in range(4):
      connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=20)
      connection.request("GET", "/api/gate/stream.mjpeg")
      connections.append((connection, connection.getresponse()))
    began, encoded = time.monotonic(), feed.encoded
    for _, response in connections:
      parts.append(len(_mjpeg_parts(response, 8)))
    seconds = time.monotonic() - began
    rate = (feed.encoded - encoded) / seconds
    for connection, _ in connections:
      connection.close()
    testing.wait_until(lambda: feed.viewers == 0, 10, "the viewers to leave")
    after = feed.encoded
    time.sleep(1.0)
    assert feed.encoded == after
  finally:
    stop.set()
    writer.join()
    web.stop()
  assert parts == [8] * 4
  assert rate <= 4 * 1.3, rate


# ------------------------------------------------------------------------------------------
# Off loopback: the token; and /healthz going stale.


@pytest.mark.slow
def test_token_required_off_loopback_and_health_turns_stale(model_dir, stream, tmp_path):
  """Bound to 0.0.0.0 (reached on 127.0.0.1) with a token: 401 without it, in by header, query
  or the page's cookie, and the token in no log line. Then the camera stops sending: /healthz
  goes from 200 to 503 naming it once its read timeout has passed."""
  if shutil.which("ffmpeg") is None:
    pytest.skip("no ffmpeg CLI (`make test` installs it)")
  service = Service(tmp_path, model_dir, stream,
                    {"host": "0.0.0.0", "token_env": "DAML_HTTP_TOKEN"},
                    env={"DAML_HTTP_TOKEN": TOKEN},
                    camera={"read_timeout_s": 2, "reconnect_initial_s": 0.5,
                            "reconnect_max_s": 1})
  bearer = {"Authorization": f"Bearer {TOKEN}"}
  try:
    service.wait_healthy(headers=bearer)
    for path in ("/", "/healthz", "/metrics", "/api/cameras", "/api/events",
                 "/api/gate/latest.jpg", "/static/app.js", "/api/nosuch"):
      assert service.get(path)[0] == 401, path
      assert service.get(path, headers={"Authorization": "Bearer wrong"})[0] == 401, path
    assert service.get("/api/cameras", headers=bearer)[0] == 200
    assert service.get(f"/api/cameras?token={TOKEN}")[0] == 200
    status, headers, _ = service.get(f"/?token={TOKEN}")
    assert status == 200 and "daml_token=" in headers["Set-Cookie"]
    assert "httponly" in headers["Set-Cookie"].lower()
    assert service.get("/api/gate/latest.jpg",
                       headers={"Cookie": f"daml_token={TOKEN}"})[0] == 200
    testing.stop_server(service.senders["gate"])
    stopped = time.monotonic()

    def stale():
      status, _, body = service.get("/healthz", headers=bearer)
      return status == 503 and "gate" in json.loads(body)["stale"]
    testing.wait_until(stale, 30, "/healthz 503", poll_s=0.2, process=service.process)
    assert time.monotonic() - stopped >= 1.5  # Not before the read timeout (2 s).
  finally:
    stderr = service.stop()
  assert "0.0.0.0" in stderr and TOKEN not in stderr and "Traceback" not in stderr


# ------------------------------------------------------------------------------------------
# The page in a real browser.


def _browser():
  """Headless Chromium driven by selenium through Debian's chromedriver."""
  if not (os.path.exists(CHROMEDRIVER) and os.path.exists(CHROMIUM)):
    pytest.skip("no chromium and chromium-driver (`make test-deps` installs them)")
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.chrome import service as chrome_service  # pylint: disable=g-import-not-at-top
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                   "--window-size=1100,900"):
    options.add_argument(argument)
  return webdriver.Chrome(service=chrome_service.Service(CHROMEDRIVER), options=options)


@pytest.mark.slow
def test_the_page_in_a_real_browser(live, tmp_path):
  """Chromium loads the page; from the page itself: the picture keeps changing, the chart has
  scores, and an alarm raised during the test shows in the event list with its thumbnail
  loaded; at a phone's width it fits the screen. The screenshot goes to tmp_path (and to $DAML_SERVICE_SCREENSHOT when set: the
  README's picture)."""
  driver = _browser()
  try:
    opened = time.time()
    driver.get(live.base + "/")
    script = lambda js: driver.execute_script(js)
    testing.wait_until(lambda: script("return window.damlPictureChanges") >= 2, 60,
                       "the live picture to change", poll_s=0.5)
    assert script("const i = document.querySelector('#camera-gate img.live');"
                  "return i.complete && i.naturalWidth") == FRAME_SIZE[1]
    testing.wait_until(lambda: script("return window.damlScoresReceived") > 10, 30,
                       "scores on the chart", poll_s=0.5)
    new_event = (f"return Array.from(document.querySelectorAll('#events li')).filter(li => "
                 f"parseFloat(li.id.slice(6)) > {opened} && li.querySelector('img') && "
                 f"li.querySelector('img').complete && "
                 f"li.querySelector('img').naturalWidth > 0).map(li => li.id)")
    testing.wait_until(lambda: script(new_event), 90,
                       "an alarm raised during the test in the list, with its thumbnail",
                       poll_s=0.5)
    event_id = script(new_event)[0][len("event-"):]
    assert live.json(f"/api/events/{event_id}")["camera"] == "gate"
    assert "frames/s" in driver.find_element("css selector", "#camera-gate .state").text
    assert driver.find_element("css selector", "#health").text == "healthy"
    # For the README's picture, a chart with some history; the test itself needs none.
    enough = 150 if os.environ.get(SCREENSHOT_ENV) else 0
    testing.wait_until(lambda: script("return window.damlScoresReceived") >= enough, 60,
                       "a chart worth a picture", poll_s=0.5)
    shot = tmp_path / "service_page.png"
    driver.save_screenshot(str(shot))
    assert Image.open(shot).size[0] > 0
    if os.environ.get(SCREENSHOT_ENV):
      shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])
    # A phone's width: one column, nothing wider than the screen, the picture still shown.
    driver.set_window_size(390, 844)
    time.sleep(0.5)
    assert script("return document.documentElement.scrollWidth <= window.innerWidth")
    width = script("return document.querySelector('#camera-gate img.live').clientWidth")
    assert 300 <= width <= 390, width
    driver.save_screenshot(str(tmp_path / "service_page_phone.png"))
  finally:
    driver.quit()


# ------------------------------------------------------------------------------------------
# detect --http: the same server over detect's cameras.


@pytest.mark.slow
def test_detect_serves_the_same_page_and_api(model_dir, stream, tmp_path):
  """`detect --http=127.0.0.1:PORT` on a live camera: the page, the camera's state and picture,
  its scores, and its alarms (detect's event lines, which have no id, snapshot or clip) in the
  API; a bad --http stops it with one line."""
  if shutil.which("ffmpeg") is None:
    pytest.skip("no ffmpeg CLI (`make test` installs it)")
  video, threshold = stream
  url = f"udp://127.0.0.1:{testing.free_port(socket.SOCK_DGRAM)}"
  sender = testing.serve_ffmpeg(video, url, loop=True)
  port = testing.free_port()
  base = f"http://127.0.0.1:{port}"

  def get(path):
    try:
      with urllib.request.urlopen(base + path, timeout=5) as response:
        return response.status, response.read()
    except urllib.error.HTTPError as error:
      return error.code, error.read()

  try:
    with testing.detect_process(f"--model_dir={model_dir}", f"--input={url}",
                                f"--output_dir={tmp_path / 'out'}", "--camera_name=gate",
                                f"--threshold={threshold}", "--smoothing_window=1",
                                f"--http=127.0.0.1:{port}", "--log_every=0") as process:
      testing.wait_until(lambda: _up(get), 180, "detect's /healthz 200", poll_s=0.5,
                         process=process)
      cameras = json.loads(get("/api/cameras")[1])
      assert cameras["gate"]["frames"] > 0 and cameras["gate"]["threshold"] == threshold
      status, body = get("/api/gate/latest.jpg")
      assert status == 200 and Image.open(io.BytesIO(body)).size == (FRAME_SIZE[1],
                                                                      FRAME_SIZE[0])
      assert get("/")[0] == 200 and b"daml_tf" in get("/")[1]
      events = []

      def alarmed():
        events[:] = json.loads(get("/api/events?camera=gate")[1])
        return any(e["end_time"] is not None for e in events)
      testing.wait_until(alarmed, 60, "an alarm of detect in the API", poll_s=0.5,
                         process=process)
      event = next(e for e in events if e["end_time"] is not None)
      assert not event["has_snapshot"] and not event["has_clip"] and event["camera"] == "gate"
      assert json.loads(get(f"/api/events/{event['id']}")[1])["id"] == event["id"]
      assert get(f"/api/events/{event['id']}/snapshot.jpg")[0] == 404
      stderr = testing.sigterm(process)
    assert process.returncode == 0, stderr[-3000:]
    assert f"http://127.0.0.1:{port}/" in stderr and "Traceback" not in stderr
  finally:
    testing.stop_server(sender)
  bad = testing.run_detect(f"--model_dir={model_dir}", f"--input={video}",
                           f"--output_dir={tmp_path / 'bad'}", "--http=0.0.0.0:8080")
  assert bad.returncode == 1 and "--http: 0.0.0.0 is not a loopback address" in bad.stderr


def _up(get):
  try:
    return get("/healthz")[0] == 200
  except OSError:
    return False
