"""The camera service's loop: many cameras, one process, evidence and Home Assistant for each alarm.

`python -m daml_tf.serve --config=cameras.yaml` calls `run`. What happens to a frame:

1. Every camera's input is read on its own thread (multicamera.FrameReader): a live input keeps
   only its newest frame, a file is read in full and in order.
2. Cameras are grouped by model (same `model_dir`, score and runtime): each group is one
   multistream.MultiStreamDetector, so the cameras of a group are scored in one batched call
   per step; cameras with other models get their own detector in the same process.
3. Per camera (CameraPipeline): masked latent cells drop out of the score and the heatmap; the
   score is smoothed; a scene-change guard compares the frame with the previous one; the
   alarms.AlarmController applies debounce, hysteresis and cooldown; alarm events go to
   `events.jsonl` and MQTT, with a snapshot and a clip (recorder.EventRecorder) per alarm.
4. Old events are deleted by retention.Retention, never those of an open alarm.
5. With `http:` in the file, each camera's newest frame, score and events are handed to the
   page's hub (web.hub: references only, nothing encoded in this loop) and web.server serves
   the page and the API from its own thread.

Files, per camera, in `<record.output_dir>/<camera>/`: scores.csv (a row per frame, flushed),
events.jsonl (a line per event, flushed), events/<id>/{snapshot.jpg, snapshot-clean.jpg,
clip.mp4}.
"""

import collections
import dataclasses
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from absl import logging
import numpy as np

from daml_tf import errors
from daml_tf import smoothing as smoothing_lib
from daml_tf.inference import detection
from daml_tf.inference import events as events_lib
from daml_tf import localize
from daml_tf.inference import multicamera
from daml_tf.inference import sources as sources_lib
from daml_tf.inference.multistream import MultiStreamDetector
from daml_tf.inference.streaming import FrameResult
from daml_tf.models import scores as scores_lib
from daml_tf.service import alarms as alarms_lib
from daml_tf.service import config as config_lib
from daml_tf.service import homeassistant
from daml_tf.service import masks as masks_lib
from daml_tf.service import recorder as recorder_lib
from daml_tf.service import retention as retention_lib
from daml_tf.service.web import events as web_events
from daml_tf.service.web import hub as web_hub
from daml_tf.service.web import server as web_server

SCENE_CHANGE = alarms_lib.SCENE_CHANGE
# Scores the masks can apply to: the mean of the result's error map over the cells kept (the
# latent error map, or for a motion score the motion-weighted one, whose mean is the score).
MASKABLE_SCORES = ("latent_mean",) + tuple(
    name for name, score in scores_lib.SCORES.items() if score.needs_motion)
# Seconds between retention sweeps.
RETENTION_EVERY_S = 60.0
# The scene-change guard compares frames subsampled by this stride (a full-resolution
# comparison costs more than the model at 640x360 and decides the same).
SCENE_STRIDE = 4
_POLL_S = 0.05


@dataclasses.dataclass(frozen=True)
class RunOptions:
  """What the command line adds to the file (tests and trials).

  Attributes:
    duration_s: stop every camera after this many seconds of its own stream (0: never).
    max_frames: stop every camera after this many of its frames (0: never).
    log_every: steps between progress lines.
  """

  duration_s: float = 0.0
  max_frames: int = 0
  log_every: int = 500


def source_options(camera: config_lib.CameraConfig) -> sources_lib.SourceOptions:
  """The camera's live-input settings: the file's overrides on top of detect's defaults."""
  overrides = camera.detection_overrides()
  values = {}
  for key in ("fps", "read_timeout_s", "reconnect_initial_s", "reconnect_max_s",
              "max_reconnects", "give_up_after_s", "rtsp_transport"):
    if key in overrides:
      values[key] = overrides[key]
  if overrides.get("input_options"):
    values["ffmpeg_options"] = tuple(overrides["input_options"])
  # The file says null for "never"; sources says 0.
  for key in ("max_reconnects", "give_up_after_s"):
    if key in values and values[key] is None:
      values[key] = 0
  return sources_lib.SourceOptions(**values)


class CameraPipeline:
  """One camera of the service: from the detector's result to files, events and MQTT.

  Args:
    cfg: the camera's configuration.
    record: where and how much is recorded.
    detector: the multi-stream detector scoring this camera (stream name = camera name).
    fps: the camera's frame rate (the recorder's ring of pre-capture frames).
    mqtt: the service's MQTT connection, or None.
    clock: the wall clock (epoch seconds) that gives events their times.
  """

  def __init__(self, cfg: config_lib.CameraConfig, record: config_lib.RecordConfig,
               detector: MultiStreamDetector, fps: float,
               mqtt: Optional[homeassistant.ServiceMqtt] = None,
               clock: Callable[[], float] = time.time):
    self.cfg = cfg
    self.name = cfg.name
    self.detector = detector
    self.folder = os.path.join(record.output_dir, cfg.name)
    os.makedirs(self.folder, exist_ok=True)
    state = detector.state(cfg.name)
    self.threshold = cfg.threshold if cfg.threshold is not None else state.threshold
    if self.threshold is None:
      raise errors.ConfigError(
          f"cameras.{cfg.name}.threshold: not set, and the model {cfg.model_dir!r} stores none "
          "(calibrate it with python -m daml_tf.calibrate, or set threshold:).")
    self._weights = None
    if cfg.masks:
      if detector.score_name not in MASKABLE_SCORES:
        raise errors.ConfigError(
            f"cameras.{cfg.name}.masks: masks need the score {' or '.join(MASKABLE_SCORES)} "
            f"(the model's score is {detector.score_name}); set score: {MASKABLE_SCORES[0]}.")
    self._smoothing = smoothing_lib.parse(cfg.smoothing or "none")
    self._smoother = smoothing_lib.CausalSmoother(self._smoothing)
    self.alarms = alarms_lib.AlarmController.from_config(self.threshold, cfg.alarm)
    self.recorder = recorder_lib.EventRecorder(
        self.folder, fps, record.pre_capture_s, record.post_capture_s,
        jpeg_quality=record.snapshot_quality)
    self._scores = detection.ScoresCsvWriter(os.path.join(self.folder, detection.SCORES_FILE))
    self._events = events_lib.JsonlSink(os.path.join(self.folder, events_lib.EVENTS_FILE))
    self._mqtt = mqtt
    self._clock = clock
    self._epoch_base: Optional[float] = None
    self._previous_small: Optional[np.ndarray] = None
    self._brightness_offset = 0.0
    self._peak_box: Dict[str, Any] = {}
    self.frames = self.scored = self.alarm_count = self.event_count = 0
    self.gaps = self.scene_changes = self.reconnects = 0
    self.last_frame_wall: Optional[float] = None
    self.last_frame_epoch: Optional[float] = None
    # The page's feed of this camera (http: in the file), or None.
    self.feed: Optional[web_hub.CameraFeed] = None
    self.online: Optional[bool] = None

  # ----------------------------------------------------------------------------------------------
  # Per frame.

  def _masked(self, result: FrameResult) -> FrameResult:
    """The result with masked cells out of the score and the error map."""
    if not self.cfg.masks or result.error_map is None:
      return result
    if self._weights is None:
      self._weights = masks_lib.cell_mask(self.cfg.masks, result.error_map.shape[:2])
    error_map = result.error_map * self._weights.reshape(
        self._weights.shape + (1,) * (result.error_map.ndim - 2))
    score = masks_lib.masked_mean(result.error_map, self._weights)
    return dataclasses.replace(result, score=float(score), error_map=error_map)

  def before_model(self, frame: np.ndarray) -> Tuple[np.ndarray, bool]:
    """(the frame the model is given, whether the scene changed at it), before the model runs.

    The scene-change guard compares the frame with the previous one. At a change the stream's
    codes are dropped (as after a gap), and the step in mean brightness is measured and taken
    off every later frame the model sees: a light switched on, or the camera's exposure, would
    otherwise leave the whole picture far from the training frames, and alarm for as long as
    it lasts. The offset adds up over changes, so lights going off again bring it back to
    about 0. The frames recorded and drawn stay as the camera gave them.
    """
    small = np.asarray(frame[::SCENE_STRIDE, ::SCENE_STRIDE])
    previous, self._previous_small = self._previous_small, small
    changed = (previous is not None and previous.shape == small.shape
               and alarms_lib.is_scene_change(
                   previous, small, delta=self.cfg.alarm.scene_change_delta,
                   fraction=self.cfg.alarm.scene_change_fraction))
    if changed:
      self.detector.reset(self.name)
      self._brightness_offset += float(np.mean(small, dtype=np.float32) -
                                       np.mean(previous, dtype=np.float32))
    offset = round(self._brightness_offset)
    if offset and frame.dtype == np.uint8:
      frame = np.clip(frame.astype(np.int16) - offset, 0, 255).astype(np.uint8)
    return frame, changed

  def epoch_of(self, timestamp_s: float) -> float:
    """A frame's wall-clock time: the stream's own clock, anchored at its first frame."""
    if self._epoch_base is None:
      self._epoch_base = self._clock() - timestamp_s
    return self._epoch_base + timestamp_s

  def handle(self, index: int, timestamp_s: float, frame: np.ndarray,
             result: FrameResult, scene_changed: bool = False) -> None:
    """Takes the detector's result of the camera's next frame (before_model's verdict on it)."""
    self.frames += 1
    self.last_frame_wall = time.monotonic()
    self.set_online(True)
    epoch = self.last_frame_epoch = self.epoch_of(timestamp_s)
    result = self._masked(result)
    smoothed = None
    if scene_changed:
      # As after a gap (before_model dropped the codes): they predict nothing of the new view.
      self._smoother.reset()
      self.scene_changes += 1
      # Its score compares the new view with the old one's codes: the frame is not scored
      # (score, smoothed and error map None together, as annotate_frame expects).
      result = dataclasses.replace(result, score=None, error_map=None)
    elif result.score is not None:
      smoothed = self._smoother.update(result.score)
      self.scored += 1
    events = self.alarms.update(epoch, smoothed, scene_changed=scene_changed, frame_index=index)
    # The frame's alarm state is the controller's (debounced, held by hysteresis), not a bare
    # comparison with the threshold.
    result = dataclasses.replace(result, smoothed=smoothed,
                                 alarm=self.alarms.open_alarm_id is not None)
    annotate = lambda: self.annotate(frame, result)  # pylint: disable=unnecessary-lambda-assignment
    for event in events:
      self._on_event(event, frame, result, annotate)
    self.recorder.add_frame(epoch, frame, annotate)
    self._scores.append(index, timestamp_s, result)
    if self.feed is not None:
      self.feed.frame(epoch, frame, result)
    if self._mqtt is not None and smoothed is not None:
      self._mqtt.publish_score(self.name, smoothed)

  def annotate(self, frame: np.ndarray, result: FrameResult) -> np.ndarray:
    """The frame with its heatmap (masked cells dark), box and score drawn."""
    return detection.annotate_frame(frame, result, self.threshold,
                                    smoothed=self._smoothing.kind != "none")

  def _record(self, event: Dict[str, Any]) -> Dict[str, Any]:
    """The events.jsonl line (and MQTT payload) of an event."""
    event_type = event["event_type"]
    record = {"id": event.get("id"), "camera": self.name, "event_type": event_type,
              # Today's field, kept for existing consumers of events.jsonl and MQTT.
              "event": event_type, "frame": event.get("frame_index"),
              "time": events_lib.utc_now_iso(), "start_time": event.get("start_time"),
              "end_time": event.get("end_time"), "start_frame": event.get("start_frame_index"),
              "end_frame": event.get("end_frame_index"), "score": event.get("score"),
              "peak_score": event.get("peak_score"), "threshold": self.threshold}
    if event_type != SCENE_CHANGE:
      box = self._peak_box.get(event["id"])
      folder = os.path.join(recorder_lib.EVENTS_DIR, event["id"])
      record.update({
          "box": None if box is None else [int(v) for v in box],
          "has_snapshot": True, "has_clip": True,
          "snapshot": os.path.join(folder, recorder_lib.SNAPSHOT_FILE),
          "snapshot_clean": os.path.join(folder, recorder_lib.CLEAN_SNAPSHOT_FILE),
          "clip": os.path.join(folder, recorder_lib.CLIP_FILE)})
      if event_type == alarms_lib.ALARM_END:
        record["end_reason"] = event.get("end_reason")
    return record

  def _emit(self, record: Dict[str, Any]) -> None:
    self._events.emit(record)
    self.event_count += 1
    if self.feed is not None:
      self.feed.event(record)
    if self._mqtt is not None:
      self._mqtt.publish_event(self.name, record)

  def _on_event(self, event: Dict[str, Any], frame: np.ndarray, result: FrameResult,
                annotate: Callable[[], np.ndarray]) -> None:
    event_type = event["event_type"]
    frame_size = frame.shape[:2]
    if event_type in (alarms_lib.ALARM_START, alarms_lib.ALARM_UPDATE):
      if result.error_map is not None:
        self._peak_box[event["id"]] = localize.anomaly_box(result.error_map, frame_size)
      if event_type == alarms_lib.ALARM_START:
        self.alarm_count += 1
        self.recorder.start(event["id"], event["start_time"])
        self._emit(self._record(event))
        if self._mqtt is not None:
          self._mqtt.publish_alarm(self.name, True)
      jpeg = self.recorder.snapshot(event["id"], frame, annotate())
      if self._mqtt is not None:
        self._mqtt.publish_snapshot(self.name, jpeg)
    elif event_type == alarms_lib.ALARM_END:
      self.recorder.end(event["id"], event["end_time"])
      self._emit(self._record(event))
      self._peak_box.pop(event["id"], None)
      if self._mqtt is not None:
        self._mqtt.publish_alarm(self.name, False)
    elif event_type == SCENE_CHANGE:
      logging.warning("Camera %s: scene change at frame %s (most of the picture changed at "
                      "once); its scoring starts over.", self.name, event.get("frame_index"))
      self._emit(self._record(event))

  def gap(self, gap: sources_lib.Gap) -> None:
    """The live input was lost and is back: the alarm ends, scoring starts over."""
    self.gaps += 1
    if gap.attempts:
      self.reconnects += 1
    self.detector.reset(self.name)
    self._smoother.reset()
    self._previous_small = None
    self._epoch_base = None
    self.recorder.cut_post_capture()
    for event in self.alarms.gap():
      self._on_event(event, np.zeros((1, 1, 3), np.uint8), FrameResult(
          index=gap.index, score=None, smoothed=None, alarm=False), lambda: None)
    logging.warning("Camera %s: gap of %.1f s before frame %d (%s); its scoring starts over.",
                    self.name, gap.gap_s, gap.index, gap.reason)

  def set_online(self, online: bool) -> None:
    if online != self.online:
      self.online = online
      if self._mqtt is not None:
        self._mqtt.publish_status(self.name, online)

  def protected_ids(self) -> set:
    return set(self.alarms.active_ids()) | set(self.recorder.open_event_ids())

  def close(self) -> None:
    """Ends an open alarm, finishes every clip, closes the files."""
    for event in self.alarms.close():
      self._on_event(event, np.zeros((1, 1, 3), np.uint8),
                     FrameResult(index=self.frames, score=None, smoothed=None, alarm=False),
                     lambda: None)
    self.recorder.cut_post_capture()
    self.recorder.close()
    self._scores.close()
    self._events.close()


@dataclasses.dataclass
class _Camera:
  pipeline: CameraPipeline
  reader: multicamera.FrameReader
  group: "_Group"
  options: sources_lib.SourceOptions
  stop_reason: str = ""
  first_timestamp: Optional[float] = None


@dataclasses.dataclass
class _Group:
  """Cameras scored by one model, in one batched call per step."""

  detector: MultiStreamDetector
  names: List[str]


def _group_key(camera: config_lib.CameraConfig) -> Tuple:
  return (os.path.realpath(camera.model_dir) if "://" not in camera.model_dir
          else camera.model_dir, camera.score or "")


def open_detectors(cfg: config_lib.ServiceConfig) -> List[_Group]:
  """One multi-stream detector per model; ConfigError naming the camera whose model fails."""
  by_model: Dict[Tuple, List[config_lib.CameraConfig]] = collections.OrderedDict()
  for camera in cfg.cameras:
    by_model.setdefault(_group_key(camera), []).append(camera)
  groups = []
  for cameras in by_model.values():
    first = cameras[0]
    names = [c.name for c in cameras]
    try:
      detector = MultiStreamDetector.from_model_dir(first.model_dir, names,
                                                    score=first.score or "")
    except (FileNotFoundError, errors.DataError, errors.ConfigError, ValueError, OSError) as error:
      raise errors.ConfigError(
          f"cameras.{first.name}.model_dir: cannot open the model {first.model_dir!r}: "
          f"{str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}"
      ) from None
    logging.info("Model %s (score %s) scores camera(s) %s in one batched call per step",
                 first.model_dir, detector.score_name, ", ".join(names))
    groups.append(_Group(detector, names))
  return groups


def _live_items(name: str, path: str, options: sources_lib.SourceOptions,
                stop: threading.Event):
  """A live camera's items, its stream opened on the reader's thread.

  A camera that is down when the service starts does not stop the others: it is tried again
  with the reconnection backoff (reconnect_initial_s, doubling up to reconnect_max_s) until it
  answers or the service stops; from then on sources reopens it after every drop.
  """
  delay = options.reconnect_initial_s
  while not stop.is_set():
    try:
      source = sources_lib.open_source(path, options, stop)
    except errors.DataError as error:
      logging.warning("Camera %s: %s Trying again in %.0f s.", name,
                      config_lib.redact(str(error)), delay)
      if stop.wait(delay):
        return
      delay = min(2 * delay, options.reconnect_max_s)
      continue
    try:
      yield from source
    finally:
      source.close()
    return


def _check_inputs(cfg: config_lib.ServiceConfig) -> None:
  for camera in cfg.cameras:
    if not sources_lib.is_live(camera.input) and not os.path.exists(camera.input):
      raise errors.ConfigError(f"cameras.{camera.name}.input: {camera.display_input!r} does "
                               "not exist (a video file, a frames folder, a stream URL or a "
                               "camera device).")


class Service:
  """The running service: its cameras, detectors, MQTT and retention.

  Args:
    cfg: the loaded configuration.
    options: the command line's limits.
  """

  def __init__(self, cfg: config_lib.ServiceConfig, options: RunOptions = RunOptions()):
    self.cfg = cfg
    self.options = options
    self.cameras: Dict[str, _Camera] = {}
    self._groups: List[_Group] = []
    self.mqtt: Optional[homeassistant.ServiceMqtt] = None
    self._arrived = threading.Event()
    self.retention = retention_lib.Retention(
        cfg.record.output_dir, cfg.record.retain_days, cfg.record.max_disk_bytes)
    self.steps = 0
    self.started = time.perf_counter()
    self.elapsed = 0.0
    self.hub: Optional[web_hub.Hub] = None
    self.web: Optional[web_server.WebServer] = None

  def open(self) -> None:
    """Opens every model, then MQTT, then every input (a stream's frames would otherwise
    queue up while the models load); ConfigError or DataError before anything runs."""
    _check_inputs(self.cfg)
    groups = self._groups = open_detectors(self.cfg)
    if self.cfg.mqtt is not None:
      m = self.cfg.mqtt
      self.mqtt = homeassistant.ServiceMqtt(
          m.host, m.port, m.topic_prefix, [c.name for c in self.cfg.cameras],
          client_id=m.client_id, username=m.username, password=m.password,
          discovery_prefix=m.discovery_prefix, qos=m.qos,
          event_types=(alarms_lib.ALARM_START, alarms_lib.ALARM_END, SCENE_CHANGE))
    by_name = {c.name: c for c in self.cfg.cameras}
    opened = []
    try:
      for group in groups:
        for name in group.names:
          camera = by_name[name]
          stop = threading.Event()
          options = source_options(camera)
          if sources_lib.is_live(camera.input):
            # Opened by the reader: a camera down at the start must not stop the others.
            items, live, fps = _live_items(name, camera.input, options, stop), True, options.fps
          else:
            source = sources_lib.open_source(camera.input, options, stop)
            opened.append(source)
            items, live, fps = source, source.live, source.fps
          reader = multicamera.FrameReader(
              items, name, capacity=1 if live else multicamera.FILE_QUEUE_FRAMES,
              keep_newest=live, arrived=self._arrived, source_stop=stop)
          pipeline = CameraPipeline(camera, self.cfg.record, group.detector, fps, self.mqtt)
          self.cameras[name] = _Camera(pipeline, reader, group, options)
      if self.cfg.http is not None:
        self._open_web(self.cfg.http)
    except BaseException:
      for source in opened:
        source.close()
      for camera in self.cameras.values():
        camera.pipeline.close()
      raise

  def _open_web(self, http: config_lib.HttpConfig) -> None:
    """The page's hub, fed by every pipeline, and its server (listening from here on)."""
    feeds = []
    for camera in self.cameras.values():
      pipeline = camera.pipeline
      pipeline.feed = web_hub.CameraFeed(pipeline.name, pipeline.annotate, pipeline.threshold,
                                         http.viewer_fps)
      feeds.append(pipeline.feed)
    self.hub = web_hub.Hub(feeds)
    store = web_events.EventStore(self.cfg.record.output_dir, list(self.cameras))
    app = web_server.WebApp(http, self.hub, store, self.status,
                            lambda: self.mqtt.stats() if self.mqtt is not None else None)
    try:
      self.web = web_server.WebServer(app)
    except OSError as error:
      raise errors.ConfigError(f"http: cannot listen on {http.host}:{http.port}: "
                               f"{error.strerror or error}") from None
    self.web.start()

  def status(self) -> Dict[str, Dict[str, Any]]:
    """Every camera's counters and stream state (the page, /healthz and /metrics); read from
    another thread, so only plain attributes."""
    now = time.monotonic()
    states = {}
    for name, camera in self.cameras.items():
      p = camera.pipeline
      last = p.last_frame_wall
      states[name] = {
          "frames": p.frames, "dropped": camera.reader.dropped, "alarms": p.alarm_count,
          "events": p.event_count, "gaps": p.gaps, "reconnects": p.reconnects,
          "scene_changes": p.scene_changes,
          "last_frame_age_s": None if last is None else now - last,
          "last_frame_time": p.last_frame_epoch, "threshold": p.threshold,
          "read_timeout_s": camera.options.read_timeout_s, "online": p.online,
          "stopped": camera.stop_reason or None}
    return states

  def _take(self, camera: _Camera) -> Optional[Tuple[int, float, np.ndarray]]:
    """The camera's next frame, or None (none yet, or it stopped)."""
    reader = camera.reader
    item = reader.get(None, block=False)
    if item is None:
      if not reader.keep_newest:
        # A file is read in full and in order: wait for its next frame.
        item = reader.get(None, block=True)
      if item is None:
        return None
    if isinstance(item, multicamera._End):  # pylint: disable=protected-access
      if item.error is None:
        camera.stop_reason = detection.STOP_END
      else:
        camera.stop_reason = (detection.STOP_SOURCE_LOST
                              if isinstance(item.error, sources_lib.SourceLost)
                              else detection.STOP_DECODE)
        logging.error("Camera %s: %s", camera.pipeline.name,
                      config_lib.redact(str(item.error)))
      camera.pipeline.set_online(False)
      return None
    if isinstance(item, sources_lib.Gap):
      camera.pipeline.gap(item)
      return None
    timestamp = item[1]
    if camera.first_timestamp is None:
      camera.first_timestamp = timestamp
    # Live timestamps are wall-clock, a file's start at 0: the duration is the camera's own.
    if self.options.duration_s and timestamp - camera.first_timestamp >= self.options.duration_s:
      camera.stop_reason = detection.STOP_DURATION
      return None
    return item

  def step(self) -> int:
    """Scores the next frame of every camera that has one; the number of frames scored."""
    done = 0
    for group in self._groups:
      batch = {}
      for name in group.names:
        camera = self.cameras[name]
        if camera.stop_reason:
          continue
        item = self._take(camera)
        if item is not None:
          batch[name] = item
      if not batch:
        continue
      prepared = {name: self.cameras[name].pipeline.before_model(item[2])
                  for name, item in batch.items()}
      began = time.perf_counter()
      results = group.detector.step({name: model_frame
                                     for name, (model_frame, _) in prepared.items()})
      if self.hub is not None:
        self.hub.inference(time.perf_counter() - began)
      for name, (index, timestamp, frame) in batch.items():
        camera = self.cameras[name]
        camera.pipeline.handle(index, timestamp, frame, results[name], prepared[name][1])
        if self.options.max_frames and camera.pipeline.frames >= self.options.max_frames:
          camera.stop_reason = detection.STOP_MAX_FRAMES
      done += len(batch)
    return done

  def _housekeeping(self, now: float, last_sweep: float) -> float:
    """Stream health on MQTT, and the retention sweep once a minute."""
    for camera in self.cameras.values():
      pipeline = camera.pipeline
      if (pipeline.last_frame_wall is not None
          and now - pipeline.last_frame_wall > camera.options.read_timeout_s):
        pipeline.set_online(False)
    if now - last_sweep < RETENTION_EVERY_S:
      return last_sweep
    protected = set()
    for camera in self.cameras.values():
      protected |= camera.pipeline.protected_ids()
    self.retention.sweep(protected)
    return now

  def run(self, stop: threading.Event) -> Dict[str, str]:
    """Runs until every camera stopped or `stop` is set; {camera: stop reason}."""
    for camera in self.cameras.values():
      camera.reader.start()
    self.started = time.perf_counter()
    last_sweep = -float("inf")
    window_start, window_frames = time.perf_counter(), 0
    while any(not c.stop_reason for c in self.cameras.values()):
      if stop.is_set():
        for camera in self.cameras.values():
          camera.stop_reason = camera.stop_reason or detection.STOP_SIGNAL
        break
      self._arrived.clear()
      done = self.step()
      if done:
        self.steps += 1
        window_frames += done
        if self.options.log_every and self.steps % self.options.log_every == 0:
          now = time.perf_counter()
          logging.info("step %d: %.1f frames/s; alarms %s", self.steps,
                       window_frames / max(now - window_start, 1e-9),
                       {n: c.pipeline.alarm_count for n, c in self.cameras.items()})
          window_start, window_frames = now, 0
      else:
        self._arrived.wait(_POLL_S)
      last_sweep = self._housekeeping(time.monotonic(), last_sweep)
      for camera in self.cameras.values():
        if camera.stop_reason:
          camera.reader.stop()
    self.elapsed = time.perf_counter() - self.started
    return {name: c.stop_reason for name, c in self.cameras.items()}

  def close(self) -> None:
    """Stops the page, closes the readers, then every camera's files and clips, then MQTT
    ("stopped")."""
    if self.web is not None:
      self.web.stop()
    for camera in self.cameras.values():
      camera.reader.close(camera.options.read_timeout_s + 5)
    for camera in self.cameras.values():
      camera.pipeline.close()
    if self.mqtt is not None:
      self.mqtt.close()
    total = sum(c.pipeline.frames for c in self.cameras.values())
    logging.info("cameras=%d frames=%d total_fps=%.1f (%.1f per camera) in %.1f s",
                 len(self.cameras), total, total / max(self.elapsed, 1e-9),
                 total / max(self.elapsed, 1e-9) / max(len(self.cameras), 1), self.elapsed)
    for name, camera in self.cameras.items():
      p = camera.pipeline
      logging.info("camera %s: frames=%d scored=%d alarms=%d events=%d scene_changes=%d "
                   "gaps=%d dropped=%d stop=%s; wrote %s", name, p.frames, p.scored,
                   p.alarm_count, p.event_count, p.scene_changes, p.gaps, camera.reader.dropped,
                   camera.stop_reason or detection.STOP_SIGNAL, p.folder)


def run(cfg: config_lib.ServiceConfig, options: RunOptions = RunOptions()) -> Dict[str, str]:
  """What `python -m daml_tf.serve` runs: {camera: stop reason}."""
  service = Service(cfg, options)
  with detection.stop_on_signals() as stop:
    service.open()
    try:
      return service.run(stop)
    finally:
      service.close()
