"""The service's page and HTTP API: starlette on uvicorn, in a daemon thread beside the frame loop.

Routes (all GET, all read-only):

  /                                  the page (static/index.html; no build step, no CDN)
  /api/cameras                       every camera's state
  /api/events?camera=&after=&before=&limit=   events newest first (Frigate's shape)
  /api/events/<id>                   one event
  /api/events/<id>/snapshot.jpg      its annotated snapshot
  /api/events/<id>/clip.mp4          its clip
  /api/<camera>/latest.jpg           the newest frame, annotated
  /api/<camera>/stream.mjpeg         annotated frames as MJPEG, at most http.viewer_fps
  /api/<camera>/scores               server-sent events: scores, alarms, stream state
  /healthz                           200, or 503 naming the cameras without a recent frame
  /metrics                           Prometheus text

The frame loop never waits for the web: it only hands references to the hub (hub.py). A client
that stops reading is dropped when one write has not gone out in SEND_TIMEOUT_S, so it holds
nothing but its own coroutine meanwhile. With a token (http.token_env) every request carries it
as `Authorization: Bearer <token>`, `?token=` or the cookie the page sets when it is opened with
`?token=` (an <img> or an EventSource cannot send headers).
"""

import asyncio
import hmac
import json
import math
import os
import socket
import threading
import time
from typing import Any, AsyncIterator, Callable, Dict, Optional

from absl import logging
import prometheus_client
from prometheus_client import core as prometheus_core
from starlette import applications
from starlette import concurrency
from starlette import requests
from starlette import responses
from starlette import routing
from starlette import staticfiles
import uvicorn

from daml_tf.service import config as config_lib
from daml_tf.service.web import events as events_lib
from daml_tf.service.web import hub as hub_lib

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
# A write to a client that has not gone out in this long drops the client.
SEND_TIMEOUT_S = 5.0
# How often a server-sent-events client is given the new scores, and the stream state.
SSE_PERIOD_S = 0.25
STATE_PERIOD_S = 1.0
# Score points a new chart is given at once.
SSE_BACKLOG = 300
MAX_EVENTS = 1000
TOKEN_COOKIE = "daml_token"

# What the service tells the server about its cameras (runner.Service.status).
StatusFn = Callable[[], Dict[str, Dict[str, Any]]]
MqttFn = Callable[[], Optional[Dict[str, Any]]]


def _json_number(value: Any) -> Any:
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


class _Stream:
  """An endless response (an ASGI app) that stops when the client goes, the hub closes, or a
  write stalls for SEND_TIMEOUT_S (the client is dropped)."""

  def __init__(self, media_type: str, chunks: Callable[[], AsyncIterator[bytes]],
               on_drop: Callable[[], None], headers: Optional[Dict[str, str]] = None):
    self.media_type = media_type
    self.chunks = chunks
    self.on_drop = on_drop
    self.headers = dict(headers or {})

  async def __call__(self, scope, receive, send) -> None:
    gone = asyncio.Event()

    async def watch():
      while True:
        message = await receive()
        if message["type"] == "http.disconnect":
          gone.set()
          return

    watcher = asyncio.ensure_future(watch())
    headers = [(b"content-type", self.media_type.encode()), (b"cache-control", b"no-store"),
               (b"x-accel-buffering", b"no")]
    headers += [(k.encode(), v.encode()) for k, v in self.headers.items()]
    chunks = self.chunks()
    try:
      await send({"type": "http.response.start", "status": 200, "headers": headers})
      async for chunk in chunks:
        if gone.is_set():
          break
        try:
          await asyncio.wait_for(send({"type": "http.response.body", "body": chunk,
                                       "more_body": True}), SEND_TIMEOUT_S)
        except asyncio.TimeoutError:
          # Returning with the response incomplete makes uvicorn close the connection.
          self.on_drop()
          logging.info("HTTP: dropped a client of %s that stopped reading", scope.get("path"))
          return
      if not gone.is_set():
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
      watcher.cancel()
      # At once, not when the generator is collected: its viewer count must drop now.
      await chunks.aclose()


class _TokenAuth:
  """Every HTTP request must carry the token (header, query or cookie): 401 otherwise."""

  def __init__(self, app, token: str):
    self.app = app
    self._token = token.encode()

  def _presented(self, scope) -> bytes:
    request = requests.Request(scope)
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
      return header[7:].strip().encode()
    return (request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE) or "").encode()

  async def __call__(self, scope, receive, send) -> None:
    if scope["type"] == "http" and not hmac.compare_digest(self._presented(scope), self._token):
      response = responses.PlainTextResponse(
          "401 Unauthorized: this service wants its token (Authorization: Bearer <token>, or "
          "open the page as /?token=<token>).\n", status_code=401,
          headers={"WWW-Authenticate": "Bearer"})
      await response(scope, receive, send)
      return
    await self.app(scope, receive, send)


class _Metrics:
  """Reads the service's counters at each scrape (nothing is counted twice in the frame loop)."""

  def __init__(self, hub: hub_lib.Hub, status: StatusFn, mqtt: MqttFn, dropped: Callable[[], int]):
    self._hub = hub
    self._status = status
    self._mqtt = mqtt
    self._dropped = dropped

  def describe(self):
    return []

  def collect(self):
    status = self._status()
    families = {
        "fps": prometheus_core.GaugeMetricFamily(
            "daml_camera_fps", "Frames/s the camera delivers (last 32 frames).", labels=["camera"]),
        "frames": prometheus_core.CounterMetricFamily(
            "daml_camera_frames", "Frames scored.", labels=["camera"]),
        "dropped": prometheus_core.CounterMetricFamily(
            "daml_camera_dropped_frames", "Frames the reader dropped (a newer one came first).",
            labels=["camera"]),
        "score": prometheus_core.GaugeMetricFamily(
            "daml_camera_score", "The latest (smoothed) score.", labels=["camera"]),
        "threshold": prometheus_core.GaugeMetricFamily(
            "daml_camera_threshold", "The alarm threshold.", labels=["camera"]),
        "alarm": prometheus_core.GaugeMetricFamily(
            "daml_camera_alarm", "1 while an alarm is open.", labels=["camera"]),
        "alarms": prometheus_core.CounterMetricFamily(
            "daml_camera_alarms", "Alarms started.", labels=["camera"]),
        "events": prometheus_core.CounterMetricFamily(
            "daml_camera_events", "Events written to events.jsonl.", labels=["camera"]),
        "gaps": prometheus_core.CounterMetricFamily(
            "daml_camera_gaps", "Gaps in the stream (lost and back, or a clock jump).",
            labels=["camera"]),
        "reconnects": prometheus_core.CounterMetricFamily(
            "daml_camera_reconnects", "Times the stream was reopened after a loss.",
            labels=["camera"]),
        "last_frame_time": prometheus_core.GaugeMetricFamily(
            "daml_camera_last_frame_timestamp_seconds", "Wall-clock time of the latest frame.",
            labels=["camera"]),
        "viewers": prometheus_core.GaugeMetricFamily(
            "daml_camera_viewers", "Clients watching the live picture.", labels=["camera"]),
        "encoded": prometheus_core.CounterMetricFamily(
            "daml_camera_live_jpegs", "Live pictures encoded for viewers (none while nobody "
            "watches).", labels=["camera"]),
    }
    for name, state in status.items():
      feed = self._hub.feeds.get(name)
      values = dict(state, fps=feed.fps() if feed else 0.0,
                    viewers=feed.viewers if feed else 0, encoded=feed.encoded if feed else 0,
                    score=feed.last_score if feed else None,
                    alarm=1.0 if feed and feed.alarm else 0.0)
      for key, family in families.items():
        value = values.get(key)
        if value is not None:
          family.add_metric([name], float(value))
    yield from families.values()
    clients = prometheus_core.CounterMetricFamily(
        "daml_http_dropped_clients", "Streaming clients dropped because they stopped reading.")
    clients.add_metric([], float(self._dropped()))
    yield clients
    mqtt = self._mqtt()
    if mqtt is not None:
      queue = prometheus_core.GaugeMetricFamily(
          "daml_mqtt_queue_length", "MQTT messages handed to the client, not yet acknowledged.")
      queue.add_metric([], float(mqtt.get("pending", 0)))
      drops = prometheus_core.CounterMetricFamily(
          "daml_mqtt_dropped", "MQTT messages dropped (queue full, or QoS 0 while offline).")
      drops.add_metric([], float(mqtt.get("dropped", 0)))
      connected = prometheus_core.GaugeMetricFamily("daml_mqtt_connected", "1 when connected.")
      connected.add_metric([], 1.0 if mqtt.get("connected") else 0.0)
      yield from (queue, drops, connected)


def health(status: Dict[str, Dict[str, Any]]) -> Dict[str, str]:
  """{camera: why it is stale} of the cameras without a frame within their read timeout."""
  stale = {}
  for name, state in status.items():
    age = state.get("last_frame_age_s")
    if age is None:
      stale[name] = "no frame yet"
    elif age > state["read_timeout_s"]:
      stale[name] = f"last frame {age:.1f} s ago (read timeout {state['read_timeout_s']:g} s)"
  return stale


class WebApp:
  """The starlette application of a service.

  Args:
    cfg: the http section.
    hub: the frame loop's feeds.
    store: the events.
    status: the service's per-camera state (runner.Service.status).
    mqtt: the MQTT statistics, or None without MQTT.
  """

  def __init__(self, cfg: config_lib.HttpConfig, hub: hub_lib.Hub, store: events_lib.EventStore,
               status: StatusFn, mqtt: MqttFn = lambda: None):
    self.cfg = cfg
    self.hub = hub
    self.store = store
    self.status = status
    self.dropped_clients = 0
    self._metrics = _Metrics(hub, status, mqtt, lambda: self.dropped_clients)
    hub.registry.register(self._metrics)
    camera_routes = [
        routing.Route("/api/{camera}/latest.jpg", self.latest),
        routing.Route("/api/{camera}/stream.mjpeg", self.mjpeg),
        routing.Route("/api/{camera}/scores", self.scores),
    ]
    routes = [
        routing.Route("/", self.index),
        routing.Route("/healthz", self.healthz),
        routing.Route("/metrics", self.metrics),
        routing.Route("/api/cameras", self.cameras),
        routing.Route("/api/events", self.events),
        routing.Route("/api/events/{event_id}", self.event),
        routing.Route("/api/events/{event_id}/{name}", self.event_file),
        *camera_routes,
        routing.Mount("/static", staticfiles.StaticFiles(directory=STATIC_DIR)),
    ]
    app = applications.Starlette(routes=routes)
    # A path that matches nothing is a 404, not a redirect to a guessed one.
    app.router.redirect_slashes = False
    self.app = _TokenAuth(app, cfg.token) if cfg.token else app

  # Helpers.

  def _feed(self, request: requests.Request) -> hub_lib.CameraFeed:
    feed = self.hub.feeds.get(request.path_params["camera"])
    if feed is None:
      raise _NotFound()
    return feed

  def _drop(self) -> None:
    self.dropped_clients += 1

  def _camera_state(self, name: str, state: Dict[str, Any]) -> Dict[str, Any]:
    feed = self.hub.feeds[name]
    return {"name": name, "camera_fps": round(feed.fps(), 2), "frames": state["frames"],
            "dropped": state["dropped"], "last_frame_age_s": _json_number(
                None if state["last_frame_age_s"] is None else round(state["last_frame_age_s"], 3)),
            "last_frame_time": state.get("last_frame_time"), "reconnects": state["reconnects"],
            "gaps": state["gaps"], "alarms": state["alarms"], "events": state["events"],
            "online": state["online"], "stopped": state["stopped"],
            "read_timeout_s": state["read_timeout_s"], "threshold": feed.threshold,
            "score": _json_number(feed.last_score), "alarm": feed.alarm, "viewers": feed.viewers,
            "latest": f"/api/{name}/latest.jpg", "stream": f"/api/{name}/stream.mjpeg",
            "scores": f"/api/{name}/scores"}

  # Routes.

  async def index(self, request: requests.Request) -> responses.Response:
    response = responses.FileResponse(os.path.join(STATIC_DIR, "index.html"),
                                      headers={"cache-control": "no-store"})
    token = request.query_params.get("token")
    if self.cfg.token and token:
      # Checked by _TokenAuth already; the page's pictures and streams then carry the cookie.
      response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
    return response

  async def healthz(self, request: requests.Request) -> responses.Response:
    del request
    status = self.status()
    # detect opens its cameras after the model loads: none yet is not healthy either.
    stale = health(status) if status else {"*": "no camera opened yet"}
    if stale:
      return responses.JSONResponse({"status": "stale", "stale": stale}, status_code=503)
    return responses.JSONResponse({"status": "ok"})

  async def metrics(self, request: requests.Request) -> responses.Response:
    del request
    body = await concurrency.run_in_threadpool(prometheus_client.generate_latest,
                                               self.hub.registry)
    return responses.Response(body, media_type=prometheus_client.CONTENT_TYPE_LATEST)

  async def cameras(self, request: requests.Request) -> responses.Response:
    del request
    return responses.JSONResponse({name: self._camera_state(name, state)
                                   for name, state in self.status().items()})

  async def events(self, request: requests.Request) -> responses.Response:
    query = request.query_params
    camera = query.get("camera") or None
    if camera is not None and camera not in self.hub.feeds:
      return responses.JSONResponse([])
    try:
      after = float(query["after"]) if query.get("after") else None
      before = float(query["before"]) if query.get("before") else None
      limit = int(query.get("limit") or 100)
    except ValueError:
      return responses.JSONResponse({"error": "after, before: numbers; limit: a whole number"},
                                    status_code=400)
    limit = max(1, min(limit, MAX_EVENTS))
    events = await concurrency.run_in_threadpool(self.store.list, camera, after, before, limit)
    return responses.JSONResponse(events)

  async def event(self, request: requests.Request) -> responses.Response:
    event = await concurrency.run_in_threadpool(self.store.get, request.path_params["event_id"])
    if event is None:
      return _not_found()
    return responses.JSONResponse(event)

  async def event_file(self, request: requests.Request) -> responses.Response:
    found = await concurrency.run_in_threadpool(
        self.store.resolve_file, request.path_params["event_id"], request.path_params["name"])
    if found is None:
      return _not_found()
    path, media_type = found
    return responses.FileResponse(path, media_type=media_type)

  async def latest(self, request: requests.Request) -> responses.Response:
    try:
      feed = self._feed(request)
    except _NotFound:
      return _not_found()
    _, jpeg = await concurrency.run_in_threadpool(feed.jpeg)
    if jpeg is None:
      return responses.PlainTextResponse("no frame yet\n", status_code=503)
    return responses.Response(jpeg, media_type="image/jpeg",
                              headers={"cache-control": "no-store"})

  async def mjpeg(self, request: requests.Request):
    try:
      feed = self._feed(request)
    except _NotFound:
      return _not_found()
    period = 1.0 / self.cfg.viewer_fps
    hub = self.hub

    async def chunks():
      # The viewer count is what lets the page's cost be seen (metrics) and bounded.
      feed.add_viewer(1)
      try:
        sent = 0
        while not hub.closed.is_set():
          if feed.frame_seq != sent:
            seq, jpeg = await concurrency.run_in_threadpool(feed.jpeg)
            if jpeg is not None and seq != sent:
              sent = seq
              yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                     % len(jpeg) + jpeg + b"\r\n")
          await asyncio.sleep(period)
      finally:
        feed.add_viewer(-1)

    return _Stream("multipart/x-mixed-replace; boundary=frame", chunks, self._drop)

  async def scores(self, request: requests.Request):
    try:
      feed = self._feed(request)
    except _NotFound:
      return _not_found()
    hub, status = self.hub, self.status

    def message(kind: str, data: Any) -> bytes:
      return f"event: {kind}\ndata: {json.dumps(data, allow_nan=False)}\n\n".encode()

    async def chunks():
      score_cursor, points = feed.scores_since(0)
      event_cursor, _ = feed.events_since(0)
      yield b"retry: 2000\n\n" + message("hello", {"camera": feed.name,
                                                    "threshold": feed.threshold})
      if points:
        yield message("scores", points[-SSE_BACKLOG:])
      last_state = 0.0
      while not hub.closed.is_set():
        await asyncio.sleep(SSE_PERIOD_S)
        score_cursor, points = feed.scores_since(score_cursor)
        if points:
          yield message("scores", points)
        event_cursor, notices = feed.events_since(event_cursor)
        for notice in notices:
          yield message("alarm", notice)
        now = time.monotonic()
        if now - last_state >= STATE_PERIOD_S:
          last_state = now
          state = status().get(feed.name)
          if state is not None:
            yield message("state", self._camera_state(feed.name, state))

    return _Stream("text/event-stream", chunks, self._drop)


class _NotFound(Exception):
  pass


def _not_found() -> responses.Response:
  return responses.PlainTextResponse("404 Not Found\n", status_code=404)


class WebServer:
  """uvicorn serving a WebApp on its own daemon thread; `start`, then `stop`.

  uvicorn installs no signal handlers off the main thread, so SIGINT and SIGTERM stay the
  service's (detection.stop_on_signals).
  """

  def __init__(self, web_app: WebApp):
    self.web_app = web_app
    cfg = web_app.cfg
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    self._socket = socket.socket(family, socket.SOCK_STREAM)
    self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    self._socket.bind((cfg.host, cfg.port))
    # Listening from here: a client connecting before uvicorn's loop runs waits in the backlog
    # instead of being refused.
    self._socket.listen(128)
    self.port = self._socket.getsockname()[1]
    self._server = uvicorn.Server(uvicorn.Config(
        web_app.app, log_level="warning", access_log=False, lifespan="off",
        timeout_graceful_shutdown=2, server_header=False))
    self._thread = threading.Thread(target=self._run, name="http", daemon=True)

  def _run(self) -> None:
    try:
      self._server.run(sockets=[self._socket])
    except Exception:  # pylint: disable=broad-except
      # The page is optional: its failure is logged, detection goes on.
      logging.exception("HTTP: the server stopped")

  def start(self) -> "WebServer":
    cfg = self.web_app.cfg
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    if not cfg.loopback and not cfg.token:
      logging.warning("HTTP: serving %s WITHOUT A TOKEN (http.allow_unauthenticated): anyone who "
                      "can reach it sees every camera.", cfg.host)
    self._thread.start()
    logging.info("HTTP: the page is on http://%s:%d/ (API under /api, /healthz, /metrics)%s",
                 host, self.port, "; requests need the token of $" + cfg.token_env
                 if cfg.token else "")
    return self

  def stop(self, timeout_s: float = 5.0) -> None:
    self.web_app.hub.close()
    self._server.should_exit = True
    self._thread.join(timeout_s)
    self._socket.close()
