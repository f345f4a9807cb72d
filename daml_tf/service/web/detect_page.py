"""`python -m daml_tf.detect --http=host:port`: the service's page and API over detect's cameras.

The same server (server.WebApp), fed through detection.FrameObserver: each camera's recorder
tells its observer of every frame, gap and event line, and the observer hands them to the hub
as the service's pipelines do. detect writes no snapshots or clips, so its events have none.
The token, for an address other than loopback, comes from $DAML_HTTP_TOKEN.
"""

import os
import threading
import time
from typing import Any, Dict, Optional, Sequence

import numpy as np

from daml_tf import errors
from daml_tf.inference import detection
from daml_tf.inference.streaming import FrameResult
from daml_tf.service import config as config_lib
from daml_tf.service.web import events as web_events
from daml_tf.service.web import hub as hub_lib
from daml_tf.service.web import server as server_lib

TOKEN_ENV = "DAML_HTTP_TOKEN"


def parse_address(spec: str, allow_unauthenticated: bool = False,
                  environ=os.environ) -> config_lib.HttpConfig:
  """--http's host:port (IPv6 as [::1]:port) as an HttpConfig; ConfigError naming the flag."""
  host, sep, port = spec.rpartition(":")
  host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
  if not sep or not host or not port.isdigit() or int(port) > 65535:
    raise errors.ConfigError(f"--http: expected host:port (e.g. 127.0.0.1:8080), got {spec!r}.")
  token = environ.get(TOKEN_ENV, "")
  cfg = config_lib.HttpConfig(host=host, port=int(port), token_env=TOKEN_ENV if token else "",
                              token=token, allow_unauthenticated=allow_unauthenticated)
  if not cfg.loopback and not token and not allow_unauthenticated:
    raise errors.ConfigError(
        f"--http: {host} is not a loopback address: set ${TOKEN_ENV} (the token every request "
        "must carry) or, on a network you trust, --http_allow_unauthenticated.")
  return cfg


class _Camera:
  """One camera's observer: counts what the page shows and feeds the hub."""

  def __init__(self, feed: hub_lib.CameraFeed):
    self.feed = feed
    self.frames = self.gaps = self.events = self.alarms = 0
    self.last_frame_wall: Optional[float] = None
    self.last_frame_epoch: Optional[float] = None
    self._epoch_base: Optional[float] = None

  def frame(self, index: int, timestamp: float, frame: np.ndarray,
            result: FrameResult) -> None:
    del index
    self.frames += 1
    self.last_frame_wall = time.monotonic()
    if self._epoch_base is None:
      self._epoch_base = time.time() - timestamp
    self.last_frame_epoch = self._epoch_base + timestamp
    self.feed.frame(self.last_frame_epoch, frame, result)

  def gap(self) -> None:
    self.gaps += 1
    self._epoch_base = None

  def emit(self, record: Dict[str, Any]) -> None:
    self.events += 1
    self.alarms += record.get("event") == "alarm_start"
    self.feed.event(record)

  def close(self) -> None:
    pass


class DetectPage:
  """The page of a detect run: `start` before the run, `observe` for detection.run, `stop`.

  Args:
    http: the address (parse_address).
    output_dir: detect's --output_dir.
    cameras: the camera names, in input order.
    read_timeout_s: a camera without a frame for longer is stale (/healthz).
  """

  def __init__(self, http: config_lib.HttpConfig, output_dir: str, cameras: Sequence[str],
               read_timeout_s: float):
    self.cameras = tuple(cameras)
    self._read_timeout_s = read_timeout_s
    self._viewer_fps = http.viewer_fps
    self._observers: Dict[str, _Camera] = {}
    self._lock = threading.Lock()
    self.hub = hub_lib.Hub()
    folders = ({self.cameras[0]: output_dir} if len(self.cameras) == 1
               else {name: os.path.join(output_dir, name) for name in self.cameras})
    store = web_events.EventStore(output_dir, self.cameras, folders)
    try:
      self.server = server_lib.WebServer(server_lib.WebApp(http, self.hub, store, self.status))
    except OSError as error:
      raise errors.ConfigError(f"--http: cannot listen on {http.host}:{http.port}: "
                               f"{error.strerror or error}") from None

  def start(self) -> "DetectPage":
    self.server.start()
    return self

  def observe(self, name: str, state) -> detection.FrameObserver:
    """The camera's observer (detection.Observe); state gives its threshold and smoothing."""
    smoothed = state.smoothing.kind != "none"
    feed = hub_lib.CameraFeed(
        name, lambda frame, result: detection.annotate_frame(frame, result, state.threshold,
                                                             smoothed), state.threshold,
        self._viewer_fps)
    observer = _Camera(feed)
    with self._lock:
      self._observers[name] = observer
    self.hub.add(feed)
    return observer

  def status(self) -> Dict[str, Dict[str, Any]]:
    """As runner.Service.status, for the cameras opened so far."""
    now = time.monotonic()
    with self._lock:
      observers = dict(self._observers)
    states = {}
    for name, camera in observers.items():
      last = camera.last_frame_wall
      states[name] = {
          # The readers' drops are not the recorders' to know: not reported.
          "frames": camera.frames, "dropped": None, "alarms": camera.alarms,
          "events": camera.events, "gaps": camera.gaps,
          # detect's recorders see gaps, not reopens: a reopened stream is a gap.
          "reconnects": camera.gaps, "last_frame_age_s": None if last is None else now - last,
          "last_frame_time": camera.last_frame_epoch, "threshold": camera.feed.threshold,
          "read_timeout_s": self._read_timeout_s, "online": last is not None,
          "stopped": None}
    return states

  def stop(self) -> None:
    self.server.stop()
