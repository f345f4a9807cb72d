"""Several cameras (videos, frame folders) scored in one process by one model.

`python -m daml_tf.detect --input=A --input=B ...` calls `run`: one input goes to
detection.run_detection unchanged (its files directly in --output_dir); several go to
`run_multi_detection`, which writes each camera's files (scores.csv, events.jsonl, scores.png,
the annotated video) in `<output_dir>/<camera>/`.

How the frames flow: every input is read on its own thread (`FrameReader`) into a small bounded
queue, so decoding overlaps the networks; the main thread takes the next frame of every camera
that has one, scores them all with one `multistream.MultiStreamDetector.step` (one encoder call,
one motion-model call) and writes each camera's outputs (`CameraRecorder`).

Every input is opened by sources.open_source, as for a single camera. Which frames: a file or
frames folder is read in full and in order; the main loop waits for the next frame of every
camera still running (lockstep), so no frame is dropped and each camera's results are those of
a detector of its own. A live input (stream URL, camera device) is read with `keep_newest`: its
queue holds the newest frame only (older ones are dropped and counted), and the main loop takes
it when it is there without waiting for the other cameras, so a slow or stalled camera delays no
other and a model too slow for the cameras shows as dropped frames, not as growing latency. A
sources.Gap (a live input lost and reopened) restarts that camera's stream only.

An input that ends (or fails, or is given up) stops only its camera; --max_frames and
--duration_s count per camera (each stops after that many of its own frames or seconds of its
own stream time); SIGINT or SIGTERM stops every camera after the current step, with every file
complete. Alarm events also go to the MQTT sink of --mqtt (one connection for all cameras, topic
<topic>/<camera>).
"""

import dataclasses
import os
import queue
import threading
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from absl import logging

from daml_tf import fileio
from daml_tf import errors
from daml_tf.inference import detection
from daml_tf.inference import events as events_lib
from daml_tf.inference import mqtt as mqtt_lib
from daml_tf.inference import sources as sources_lib
from daml_tf.inference.multistream import MultiStreamDetector
from daml_tf.inference.streaming import StreamState

# Frames decoded ahead per file input: enough to keep decoding busy during a model step, few
# enough that memory stays small at any resolution.
FILE_QUEUE_FRAMES = 4
# How often a blocked wait looks at the stop event (seconds).
_POLL_SECONDS = 0.1

# A frame (index, timestamp_s, uint8 frame) or, from a live input, a sources.Gap.
Item = sources_lib.Item


@dataclasses.dataclass(frozen=True)
class _End:
  """The reader's last item: the input ended (error None) or failed (the exception)."""

  error: Optional[BaseException] = None


class FrameReader:
  """Reads one input on its own thread into a bounded queue.

  Args:
    frames: the input's items (a sources.Source, or any iterator of frames and Gap items);
      iterated, then closed if it can be, on the reader's thread.
    name: for the thread's name and logs.
    capacity: items the queue holds.
    keep_newest: when the queue is full, drop its oldest item rather than wait (a live
      source; with capacity 1 the queue holds the newest frame only); otherwise wait for room
      (a file: every frame in order).
    arrived: an event set whenever an item is queued (shared by the readers of a loop, which
      waits on it when no camera has a frame).
    source_stop: an event `close` sets, so that a live source waiting for its stream gives up
      (the one sources.open_source was given).

  Attributes:
    dropped: items dropped to keep the newest (keep_newest only).
  """

  def __init__(self, frames: Iterator[Item], name: str, capacity: int = FILE_QUEUE_FRAMES,
               keep_newest: bool = False, arrived: Optional[threading.Event] = None,
               source_stop: Optional[threading.Event] = None):
    self._frames = frames
    self._source_stop = source_stop
    self.name = name
    self.keep_newest = keep_newest
    self._queue: queue.Queue = queue.Queue(maxsize=max(1, capacity))
    self._closing = threading.Event()
    # Set on every item put, so that a consumer of several readers can wait for any of them.
    self._arrived = arrived
    self.dropped = 0
    self._thread = threading.Thread(target=self._run, name=f"reader-{name}", daemon=True)

  def start(self) -> "FrameReader":
    self._thread.start()
    return self

  def _put(self, item, may_drop: bool) -> bool:
    """Queues item; False if the reader was closed first."""
    drop = may_drop and self.keep_newest
    while not self._closing.is_set():
      try:
        # A live source never waits: a full queue loses its oldest frame instead.
        self._queue.put(item, block=not drop, timeout=None if drop else _POLL_SECONDS)
      except queue.Full:
        if drop:
          try:
            self._queue.get_nowait()
            self.dropped += 1
          except queue.Empty:
            pass
        continue
      if self._arrived is not None:
        self._arrived.set()
      return True
    return False

  def _run(self) -> None:
    end = _End()
    try:
      for item in self._frames:
        if not self._put(item, may_drop=True):
          return
    except Exception as e:  # pylint: disable=broad-except
      # Handed to the main thread, which decides what it means for the camera.
      end = _End(e)
    finally:
      if hasattr(self._frames, "close"):
        self._frames.close()  # A generator over a video file closes its container.
    self._put(end, may_drop=False)

  def get(self, stop: Optional[threading.Event] = None, block: bool = True):
    """The next item, an _End when the input is over, or None (nothing yet without `block`,
    or `stop` set while waiting)."""
    while True:
      try:
        return self._queue.get(block=block, timeout=_POLL_SECONDS if block else None)
      except queue.Empty:
        if not block or (stop is not None and stop.is_set()):
          return None

  def stop(self) -> None:
    """Asks the thread to stop reading (and a live source to stop waiting); returns at once."""
    self._closing.set()
    if self._source_stop is not None:
      self._source_stop.set()

  def close(self, timeout: float = 10.0) -> None:
    """Stops reading and waits for the thread (a decoder stuck in a call is left behind: the
    thread is a daemon)."""
    self.stop()
    self._thread.join(timeout)
    if self._thread.is_alive():
      logging.warning("The reader of %s did not stop within %.0f s.", self.name, timeout)


class CameraRecorder(detection.FrameRecorder):
  """One camera's outputs, as detection.detect_frames writes them for a single input
  (detection.FrameRecorder), in a folder it creates, with an annotated video of its own.

  Args:
    output_dir: the camera's folder (created).
    camera: its name (events, plot title).
    state: its stream state in the detector (threshold and smoothing shown).
    plot_window: frames shown in scores.png.
    annotate_fps: the frame rate of the camera's annotated video (detection.annotated_writer),
      or None for none.
    sinks: where the alarm events go besides events.jsonl (not closed here).
    observer: told of every frame, gap and event (detection.FrameObserver), or None.
  """

  def __init__(self, output_dir: str, camera: str, state: StreamState,
               plot_window: int = detection.DEFAULT_PLOT_WINDOW,
               annotate_fps: Optional[float] = None,
               sinks: Sequence[events_lib.EventSink] = (),
               observer: Optional[detection.FrameObserver] = None):
    fileio.makedirs(output_dir)
    writer = video_path = None
    if annotate_fps is not None:
      writer, video_path = detection.annotated_writer(output_dir, annotate_fps)
    super().__init__(output_dir, camera, state, plot_window, writer, sinks, observer)
    self.annotated_video = video_path

  def close(self, stop_reason: str, elapsed: float,
            stopped_at: Optional[int] = None) -> detection.DetectionSummary:
    """Closes every file, draws scores.png; the camera's summary."""
    self.close_files()
    if self._writer is not None:
      self._writer.close()
    return self.summary(stop_reason, elapsed, stopped_at)


@dataclasses.dataclass
class _Camera:
  """A camera of the run: where its frames come from and go, and why it stopped."""

  input_path: str
  reader: FrameReader
  recorder: CameraRecorder
  stop_reason: str = ""  # Empty while it runs.
  stopped_at: Optional[int] = None
  error: str = ""  # Why not a single frame could be read.


def _end_camera(camera: _Camera, end: _End) -> None:
  """Records why a camera's input is over; re-raises what is not a data problem (a bug)."""
  if end.error is None:
    camera.stop_reason = detection.STOP_END
    return
  if not isinstance(end.error, errors.DataError):
    raise end.error
  camera.stop_reason = (detection.STOP_SOURCE_LOST
                        if isinstance(end.error, sources_lib.SourceLost) else detection.STOP_DECODE)
  if not camera.recorder.frames:
    camera.error = f"No frame could be read: {getattr(end.error, 'reason', end.error)}"
    logging.error("Camera %s (%s): %s", camera.recorder.camera,
                  sources_lib.redact(camera.input_path), camera.error)
    return
  camera.stopped_at = getattr(end.error, "index", camera.recorder.frames)
  logging.warning("Camera %s: %s; its results of the %d frames read are kept.",
                  camera.recorder.camera, end.error, camera.recorder.frames)


def _next_frames(detector: MultiStreamDetector, cameras: Dict[str, _Camera],
                 active: List[str], duration_s: float, stop: Optional[threading.Event],
                 arrived: threading.Event) -> Dict[str, Item]:
  """The next frame of each active camera that has one; marks the cameras that stop and
  restarts those whose input had a gap.

  A file's reader is waited for (every frame, in order); a keep_newest reader is taken only if
  it has a frame, and when no camera has one the call waits a little for any to arrive.
  """
  arrived.clear()
  batch = {}
  for name in active:
    camera = cameras[name]
    item = camera.reader.get(stop, block=not camera.reader.keep_newest)
    if item is None:
      continue
    if isinstance(item, _End):
      _end_camera(camera, item)
    elif isinstance(item, sources_lib.Gap):
      # The live input was lost and is back: the frames before and after are not one clip.
      camera.recorder.gap()
      detector.reset(name)
      logging.warning("Camera %s: gap of %.1f s before frame %d (%s); its scoring starts "
                      "over.", name, item.gap_s, item.index, item.reason)
    elif camera.recorder.past_duration(item[1], duration_s):
      camera.stop_reason = detection.STOP_DURATION
    else:
      batch[name] = item
  if not batch and all(not cameras[name].stop_reason for name in active) and not (
      stop is not None and stop.is_set()):
    arrived.wait(_POLL_SECONDS)
  return batch


def detect_cameras(detector: MultiStreamDetector, cameras: Dict[str, _Camera],
                   max_frames: int = 0, duration_s: float = 0.0, log_every: int = 100,
                   stop: Optional[threading.Event] = None,
                   arrived: Optional[threading.Event] = None) -> int:
  """The multi-camera loop: a detector step over the next frame of every running camera.

  Runs until every camera has stopped (its input ended or failed, max_frames of its frames,
  duration_s of its stream time) or `stop` is set (every camera still running stops).

  Args:
    detector: one stream per camera name.
    cameras: {name: _Camera}, readers started.
    max_frames, duration_s: per camera (0: no limit); as detection.detect_frames.
    log_every: steps between progress lines.
    stop: when set (stop_on_signals), the loop ends after the current step.
    arrived: the event the keep_newest readers set on a new frame.

  Returns:
    The number of steps.
  """
  arrived = arrived or threading.Event()
  active = list(cameras)
  steps = window_frames = 0
  window_start = time.perf_counter()
  while active:
    if stop is not None and stop.is_set():
      for name in active:
        cameras[name].stop_reason = detection.STOP_SIGNAL
      break
    batch = _next_frames(detector, cameras, active, duration_s, stop, arrived)
    if batch:
      results = detector.step({name: item[2] for name, item in batch.items()})
      for name, (index, timestamp, frame) in batch.items():
        recorder = cameras[name].recorder
        recorder.record(index, timestamp, frame, results[name])
        if max_frames and recorder.frames >= max_frames:
          cameras[name].stop_reason = detection.STOP_MAX_FRAMES
      steps += 1
      window_frames += len(batch)
      if log_every and steps % log_every == 0:
        now = time.perf_counter()
        logging.info("step %d: %.1f frames/s over %d cameras (last %d steps); alarms so far %s",
                     steps, window_frames / max(now - window_start, 1e-9), len(batch),
                     log_every, {n: c.recorder.alarms for n, c in cameras.items()})
        window_start, window_frames = now, 0
    for name in active:
      if cameras[name].stop_reason:
        cameras[name].reader.stop()  # A camera that stopped no longer reads (nor reconnects).
    active = [name for name in active if not cameras[name].stop_reason]
  return steps


def _open_sources(cfg: detection.DetectConfig) -> List[Tuple[sources_lib.Source,
                                                              threading.Event]]:
  """(source, its stop event) per input, by sources.open_source; all or none (on an error the
  ones already open are closed)."""
  opened = []
  try:
    for path in cfg.inputs:
      source_stop = threading.Event()
      opened.append((sources_lib.open_source(path, cfg.source_options, source_stop),
                     source_stop))
  except BaseException:
    for source, _ in opened:
      source.close()  # Not iterated by any thread yet.
    raise
  return opened


def _open_cameras(cfg: detection.DetectConfig, detector: MultiStreamDetector,
                  arrived: threading.Event,
                  sinks: Sequence[events_lib.EventSink],
                  observe: Optional[detection.Observe] = None) -> Dict[str, _Camera]:
  """A reader (not started) and a recorder per input, in `<output_dir>/<camera>/`."""
  cameras = {}
  for name, path, (source, source_stop) in zip(cfg.cameras, cfg.inputs, _open_sources(cfg)):
    output_dir = os.path.join(cfg.output_dir, name)
    # A file: every frame, in order; a live input: the newest frame (see the module doc).
    reader = FrameReader(source, name, capacity=1 if source.live else FILE_QUEUE_FRAMES,
                         keep_newest=source.live, arrived=arrived, source_stop=source_stop)
    recorder = CameraRecorder(
        output_dir, name, detector.state(name), cfg.plot_window,
        source.fps if cfg.annotate else None, sinks,
        None if observe is None else observe(name, detector.state(name)))
    cameras[name] = _Camera(path, reader, recorder)
  return cameras


def _check_inputs(cfg: detection.DetectConfig) -> None:
  """FileNotFoundError for a missing file or folder input, or a missing model directory."""
  for path in cfg.inputs:
    if not sources_lib.is_live(path) and not fileio.exists(path):
      raise FileNotFoundError(
          f"Input {path!r} does not exist: give a video file, a folder of frames, a stream URL "
          "(rtsp://, http://, udp://, ...) or a camera device.")
  if not fileio.isdir(cfg.model_dir):
    raise FileNotFoundError(f"Model directory {cfg.model_dir!r} does not exist.")


def run_multi_detection(cfg: detection.DetectConfig, observe: Optional[detection.Observe] = None
                        ) -> Dict[str, detection.DetectionSummary]:
  """Runs one multi-stream detector over several inputs, one camera each.

  Writes in `<output_dir>/<camera>/` what detection.run_detection writes in output_dir for one
  input (scores.csv and events.jsonl as frames are scored, scores.png at the end, with
  `annotate` the annotated video; the events also to MQTT with cfg.mqtt). See the module doc
  for how frames are read, batched and stopped.

  Args:
    cfg: the inputs, camera names and everything else (DetectConfig).
    observe: makes each camera's detection.FrameObserver (detect --http), or None.

  Returns:
    {camera: DetectionSummary}, in the order of the inputs; stop_reason "source_lost" for a
    live input given up.

  Raises:
    FileNotFoundError: an input file or folder, or the model's config or checkpoint, is
      missing.
    errors.DataError: a live input cannot be opened at the start (nothing runs then), or an
      input held no readable frame (raised after every camera finished and every file was
      closed; the other cameras' results stand).
  """
  # Before the model loads: a missing file fails the run before anything is written.
  _check_inputs(cfg)
  detector = MultiStreamDetector.from_model_dir(
      cfg.model_dir, cfg.cameras, cfg.threshold, cfg.smoothing_window, cfg.runtime_options,
      score=cfg.score, smoothing=cfg.smoothing)
  if detector.state(cfg.cameras[0]).threshold is None:
    logging.warning("No threshold (no --threshold, none stored with %s): scores only, no "
                    "alarms.", cfg.model_dir)
  # One connection for every camera: the topic of an event names its camera.
  sinks = [] if cfg.mqtt is None else [mqtt_lib.MqttSink(cfg.mqtt)]
  arrived = threading.Event()
  summaries, cameras, elapsed = {}, {}, 0.0
  try:
    with detection.stop_on_signals() as stop:
      # Opened after the model: a live stream's frames would otherwise queue up while it loads.
      cameras = _open_cameras(cfg, detector, arrived, sinks, observe)
      start = time.perf_counter()
      try:
        for camera in cameras.values():
          camera.reader.start()
        detect_cameras(detector, cameras, cfg.max_frames, cfg.duration_s, cfg.log_every, stop,
                       arrived)
      finally:
        for camera in cameras.values():
          camera.reader.close(cfg.read_timeout_s + 5)
        elapsed = time.perf_counter() - start
        for name, camera in cameras.items():
          summaries[name] = camera.recorder.close(camera.stop_reason or detection.STOP_SIGNAL,
                                                  elapsed, camera.stopped_at)
  finally:
    for sink in sinks:
      sink.close()  # Bounded: a broker that is gone never holds the exit.
  _log_summaries(summaries, {name: c.reader.dropped for name, c in cameras.items()}, elapsed)
  failed = [f"{sources_lib.redact(camera.input_path)!r} (camera {name}): {camera.error}"
            for name, camera in cameras.items() if camera.error]
  if failed:
    raise errors.DataError("Input " + "; input ".join(failed))
  return summaries


def _log_summaries(summaries: Dict[str, detection.DetectionSummary], dropped: Dict[str, int],
                   elapsed: float) -> None:
  for name, summary in summaries.items():
    # dropped: frames of a live input the loop was too slow for (newest-frame reading).
    logging.info("camera %s: frames=%d scored=%d alarms=%d events=%d gaps=%d dropped=%d "
                 "stop=%s%s; wrote %s", name, summary.frames, summary.scored, summary.alarms,
                 summary.events, summary.gaps, dropped[name], summary.stop_reason,
                 "" if summary.stopped_at is None
                 else f" (stopped at frame {summary.stopped_at})",
                 os.path.dirname(summary.scores_csv))
  total = sum(summary.frames for summary in summaries.values())
  logging.info("cameras=%d frames=%d total_fps=%.1f (%.1f per camera)", len(summaries), total,
               total / max(elapsed, 1e-9), total / max(elapsed, 1e-9) / max(len(summaries), 1))


def run(cfg: detection.DetectConfig, observe: Optional[detection.Observe] = None
        ) -> Dict[str, detection.DetectionSummary]:
  """What `python -m daml_tf.detect` runs: {camera: summary}, by run_detection for one input
  (its files directly in output_dir, as before there were several), by run_multi_detection
  for several. observe: makes each camera's detection.FrameObserver (detect --http)."""
  if len(cfg.inputs) == 1:
    return {cfg.cameras[0]: detection.run_detection(cfg, observe)}
  return run_multi_detection(cfg, observe)
