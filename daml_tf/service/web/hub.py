"""What the frame loop tells the page, handed over without ever waiting for a viewer.

The frame loop (runner.Service) calls `Hub.frame`, `Hub.event` and `Hub.inference`; each takes
a lock for a few list operations and returns. Nothing is encoded there: the newest frame and its
result are kept by reference, and the web thread annotates and encodes a JPEG only when a viewer
asks for one, at most `max_fps` a second per camera however many viewers share it. Scores and events go to
bounded rings with sequence numbers; each server-sent-events client keeps its own cursor, so a
slow client skips what fell off the ring instead of growing a queue.
"""

import collections
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np
import prometheus_client

from daml_tf.inference.streaming import FrameResult
from daml_tf.service import recorder as recorder_lib

# Score points kept per camera: a minute at 10 frames/s, what the page's chart shows.
SCORE_HISTORY = 600
# Event notices kept per camera for the live list (the list itself is read from events.jsonl).
EVENT_HISTORY = 100
# Frame arrival times kept per camera for its frames/s.
FPS_WINDOW = 32
# JPEG quality of the live picture: a viewer's picture, not evidence.
LIVE_JPEG_QUALITY = 75
# Inference time buckets (seconds of one batched model call).
INFERENCE_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class CameraFeed:
  """One camera's live state, shared by the frame loop (writer) and the web thread (readers).

  Args:
    name: the camera.
    annotate: draws the heatmap, box and score on a frame (runner.CameraPipeline.annotate).
    threshold: the camera's alarm threshold (the chart's line), or None (detect without one).
    max_fps: live pictures encoded per second at most (http.viewer_fps): a picture younger
      than 1 / max_fps is served again rather than a newer frame encoded.
  """

  def __init__(self, name: str, annotate: Callable[[np.ndarray, FrameResult], np.ndarray],
               threshold: Optional[float], max_fps: float = 4.0,
               clock: Callable[[], float] = time.monotonic):
    self.name = name
    self.threshold = threshold
    self.period_s = 1.0 / max_fps
    self._annotate = annotate
    self._clock = clock
    self._lock = threading.Lock()
    self._encode_lock = threading.Lock()
    self._latest: Optional[Tuple[int, np.ndarray, FrameResult]] = None
    self._frame_seq = 0
    self._jpeg: Tuple[int, Optional[bytes]] = (0, None)
    self._jpeg_at = -float("inf")
    self._arrivals: Deque[float] = collections.deque(maxlen=FPS_WINDOW)
    self._scores: Deque[Tuple[int, Dict[str, Any]]] = collections.deque(maxlen=SCORE_HISTORY)
    self._score_seq = 0
    self._events: Deque[Tuple[int, Dict[str, Any]]] = collections.deque(maxlen=EVENT_HISTORY)
    self._event_seq = 0
    self.viewers = 0
    self.encoded = 0
    self.last_score: Optional[float] = None
    self.alarm = False

  # Writer side (the frame loop).

  def frame(self, epoch_s: float, frame: np.ndarray, result: FrameResult) -> None:
    value = result.smoothed if result.smoothed is not None else result.score
    point = {"t": round(epoch_s, 3), "score": value, "alarm": bool(result.alarm)}
    with self._lock:
      self._frame_seq += 1
      self._latest = (self._frame_seq, frame, result)
      self._arrivals.append(self._clock())
      self._score_seq += 1
      self._scores.append((self._score_seq, point))
      self.last_score = value
      self.alarm = bool(result.alarm)

  def event(self, record: Dict[str, Any]) -> None:
    # The service's records say event_type, detect's say event.
    notice = {"id": record.get("id"), "camera": self.name,
              "type": record.get("event_type") or record.get("event")}
    with self._lock:
      self._event_seq += 1
      self._events.append((self._event_seq, notice))

  # Reader side (the web thread).

  def fps(self) -> float:
    """Frames/s over the last FPS_WINDOW frames (0 when the last one is older than they span)."""
    with self._lock:
      arrivals = list(self._arrivals)
    if len(arrivals) < 2:
      return 0.0
    span = arrivals[-1] - arrivals[0]
    if span <= 0 or self._clock() - arrivals[-1] > max(span, 1.0):
      return 0.0
    return (len(arrivals) - 1) / span

  @property
  def frame_seq(self) -> int:
    return self._frame_seq

  def jpeg(self) -> Tuple[int, Optional[bytes]]:
    """(frame number, the newest frame annotated as JPEG); (0, None) before the first frame.
    Encoded here, on the caller's (web) thread, only when the last picture is of an older
    frame and at least period_s old: the cost is bounded per camera, not per viewer."""
    with self._lock:
      latest = self._latest
    if latest is None:
      return 0, None
    seq, frame, result = latest
    with self._encode_lock:
      now = self._clock()
      if self._jpeg[0] != seq and (self._jpeg[1] is None
                                   or now - self._jpeg_at >= 0.95 * self.period_s):
        self._jpeg = (seq, recorder_lib.encode_jpeg(self._annotate(frame, result),
                                                    LIVE_JPEG_QUALITY))
        self._jpeg_at = now
        self.encoded += 1
      return self._jpeg

  def scores_since(self, cursor: int) -> Tuple[int, List[Dict[str, Any]]]:
    """(new cursor, the score points after `cursor` still in the ring)."""
    with self._lock:
      points = [point for seq, point in self._scores if seq > cursor]
      return self._score_seq, points

  def events_since(self, cursor: int) -> Tuple[int, List[Dict[str, Any]]]:
    with self._lock:
      notices = [notice for seq, notice in self._events if seq > cursor]
      return self._event_seq, notices

  def add_viewer(self, delta: int) -> None:
    with self._lock:
      self.viewers += delta


class Hub:
  """Every camera's feed, the inference-time histogram and the registry /metrics serves.

  A CollectorRegistry of its own (not prometheus_client's global one), so several services can
  run in one process (tests).
  """

  def __init__(self, feeds: Sequence[CameraFeed] = ()):
    # detect adds its cameras' feeds as it opens them (add), the service all at once.
    self.feeds: Dict[str, CameraFeed] = {feed.name: feed for feed in feeds}
    self.registry = prometheus_client.CollectorRegistry()
    self.inference_seconds = prometheus_client.Histogram(
        "daml_inference_seconds", "Seconds of one batched model call (every camera of a model).",
        buckets=INFERENCE_BUCKETS, registry=self.registry)
    self.closed = threading.Event()

  def add(self, feed: CameraFeed) -> None:
    self.feeds = dict(self.feeds, **{feed.name: feed})

  def inference(self, seconds: float) -> None:
    self.inference_seconds.observe(seconds)

  def close(self) -> None:
    """Ends every stream (the server is stopping)."""
    self.closed.set()
