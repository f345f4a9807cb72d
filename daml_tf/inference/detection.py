"""Driving a streaming detector over a video, a frames folder or a live stream: scores, events,
plot, annotation.

`python -m daml_tf.detect` calls `run_detection`; `detect_frames` is its loop, over any iterator
of frames (an endless one too: memory stays bounded, see its doc). The input is opened by
sources.open_source.
"""

import collections
import contextlib
import csv
import dataclasses
import io
import os
import signal
import threading
import time
from typing import (Any, Callable, Dict, Iterable, Iterator, Optional, Protocol, Sequence, Tuple,
                    Union)
from urllib import parse

from absl import logging
import numpy as np

from daml_tf import fileio
from daml_tf import errors
from daml_tf.evaluation import report
from daml_tf.data import video_io
from daml_tf.inference import events as events_lib
from daml_tf.inference import backends
from daml_tf import localize
from daml_tf.inference import mqtt as mqtt_lib
from daml_tf.inference import sources
from daml_tf.inference.streaming import FrameResult
from daml_tf.inference.streaming import StreamingDetector

SCORES_FILE = "scores.csv"
PLOT_FILE = "scores.png"
ANNOTATED_BASENAME = "annotated"
CSV_COLUMNS = ("frame", "timestamp_s", "score", "alarm")
DEFAULT_PLOT_WINDOW = 2000
# Why the loop stopped (DetectionSummary.stop_reason).
STOP_END, STOP_MAX_FRAMES, STOP_DURATION, STOP_SIGNAL, STOP_DECODE, STOP_SOURCE_LOST = (
    "end", "max_frames", "duration", "signal", "decode_error", "source_lost")
_STOPPED_AT = {STOP_DECODE: "decoding stopped", STOP_SOURCE_LOST: "the input was given up"}


@dataclasses.dataclass(frozen=True)
class DetectionSummary:
  """What `run_detection` did.

  Attributes:
    frames: frames read.
    scored: frames with a score.
    alarms: frames with an alarm.
    mean_fps: frames per second over the whole run (decode, score, annotate).
    threshold: the threshold used (None: no alarms).
    stopped_at: index of the frame where decoding stopped early (or where a live input was
      given up), or None if the input was read to its end.
    scores_csv, plot_png: the files written.
    annotated_video: the annotated video, or None.
    events_jsonl: the alarm events file.
    events: alarm events written (starts and ends).
    stop_reason: why the loop ended: "end" (input exhausted), "max_frames", "duration",
      "signal" (SIGINT or SIGTERM), "decode_error" (see stopped_at) or "source_lost" (a live
      input stayed lost beyond the reconnection limits).
    gaps: gaps in a live input (lost and reopened, or its clock jumped); the detector
      restarted after each.
  """

  frames: int
  scored: int
  alarms: int
  mean_fps: float
  threshold: Optional[float]
  stopped_at: Optional[int]
  scores_csv: str
  plot_png: str
  annotated_video: Optional[str]
  events_jsonl: Optional[str] = None
  events: int = 0
  stop_reason: str = STOP_END
  gaps: int = 0


@dataclasses.dataclass(frozen=True)
class DetectConfig:
  """What `python -m daml_tf.detect` was asked to do (built once from its flags).

  Attributes:
    model_dir: a training run's directory, or a serving or LiteRT export (see
      backends.open_model).
    inputs: the cameras' inputs, one each (a list is made a tuple): video files, folders of
      frames, stream URLs (rtsp://, http(s)://, udp://, tcp://, ...) or V4L2 devices
      (/dev/video0); see sources.open_source. With one, every output goes directly in
      output_dir (run_detection); with several, each camera's go in `<output_dir>/<camera>/`
      (multicamera.run_multi_detection).
    output_dir: created if needed.
    threshold: overrides the stored threshold (`<model_dir>/threshold.json`, or the one
      recorded in an export); with neither, no frame raises an alarm.
    smoothing_window: causal moving average of the raw scores before thresholding.
    score: overrides the model's configured score (a latent score of models.scores).
    smoothing: a causal smoothing spec (ma:N, ema:A); overrides smoothing_window.
    annotate: also write the annotated video.
    fps: frame rate of a frames folder (timestamps, annotated video), and of a file or
      stream that states none.
    log_every: frames between progress lines.
    runtime_options: what to ask of the runtime that opens the model (backends.RuntimeOptions).
    camera_name: the camera of the events of a single input (default:
      camera_name_of(input_path)).
    camera_names: the camera of each input, in order (default: each input's
      camera_name_of); with several inputs, also the name of its output folder.
    max_frames, duration_s: limits (0: none); see detect_frames.
    plot_window: frames shown in scores.png.
    mqtt: also publish the alarm events over MQTT (mqtt.MqttConfig), or None.
    read_timeout_s, reconnect_initial_s, reconnect_max_s, max_reconnects, give_up_after_s,
      rtsp_transport, input_options: how a live input is read and reopened (see
      sources.SourceOptions; input_options are its ffmpeg_options).
  """

  model_dir: str
  inputs: Tuple[str, ...]
  output_dir: str
  threshold: Optional[float] = None
  smoothing_window: int = 1
  score: str = ""
  smoothing: str = ""
  annotate: bool = False
  fps: float = video_io.DEFAULT_FPS
  log_every: int = 100
  runtime_options: backends.RuntimeOptions = backends.RuntimeOptions()
  camera_name: str = ""
  max_frames: int = 0
  duration_s: float = 0.0
  plot_window: int = DEFAULT_PLOT_WINDOW
  mqtt: Optional[mqtt_lib.MqttConfig] = None
  read_timeout_s: float = sources.SourceOptions.read_timeout_s
  reconnect_initial_s: float = sources.SourceOptions.reconnect_initial_s
  reconnect_max_s: float = sources.SourceOptions.reconnect_max_s
  max_reconnects: int = sources.SourceOptions.max_reconnects
  give_up_after_s: float = sources.SourceOptions.give_up_after_s
  rtsp_transport: str = sources.SourceOptions.rtsp_transport
  input_options: Tuple[Tuple[str, str], ...] = ()
  camera_names: Tuple[str, ...] = ()

  @property
  def input_path(self) -> str:
    """The first (with one camera, the only) input."""
    return self.inputs[0]

  @property
  def cameras(self) -> Tuple[str, ...]:
    """The camera name of each input: camera_names, camera_name (one input), or the inputs'
    base names."""
    if self.camera_names:
      return self.camera_names
    if self.camera_name:
      return (self.camera_name,)
    return tuple(camera_name_of(path) for path in self.inputs)

  def _check_cameras(self) -> None:
    # Normalised here so that a list or a bare string from a caller still compares and hashes.
    for field in ("inputs", "camera_names"):
      value = getattr(self, field)
      object.__setattr__(self, field, (value,) if isinstance(value, str) else tuple(value))
    if not self.inputs:
      raise errors.ConfigError("--input is required (one or more video files, frames folders, "
                               "stream URLs or camera devices).")
    if self.camera_names and len(self.camera_names) != len(self.inputs):
      raise errors.ConfigError(
          f"--camera_names gives {len(self.camera_names)} names for {len(self.inputs)} "
          "inputs: give one per --input, in order.")
    if self.camera_name and (self.camera_names or len(self.inputs) > 1):
      raise errors.ConfigError("--camera_name names the camera of a single --input; with "
                               "several, give --camera_names (one per input).")
    cameras = self.cameras
    if self.camera_names and not all(self.camera_names):
      raise errors.ConfigError(f"--camera_names has an empty name: {list(self.camera_names)}.")
    duplicates = sorted({name for name in cameras if cameras.count(name) > 1})
    if duplicates:
      raise errors.ConfigError(
          f"Camera names must be unique; {duplicates} would name more than one input"
          f"{'' if self.camera_names else ' (the base names of the inputs)'}: give "
          "--camera_names.")
    # With several inputs a name is also a folder of output_dir.
    bad = [name for name in cameras if name in (".", "..") or "/" in name or "\\" in name]
    if bad and len(self.inputs) > 1:
      raise errors.ConfigError(f"Camera names {bad} cannot name an output folder: give "
                               "--camera_names without '/', '\\', '.' or '..'.")

  @property
  def source_options(self) -> sources.SourceOptions:
    """How sources.open_source reads the input."""
    return sources.SourceOptions(
        fps=self.fps, read_timeout_s=self.read_timeout_s,
        reconnect_initial_s=self.reconnect_initial_s, reconnect_max_s=self.reconnect_max_s,
        max_reconnects=self.max_reconnects, give_up_after_s=self.give_up_after_s,
        rtsp_transport=self.rtsp_transport, ffmpeg_options=self.input_options)

  def __post_init__(self):
    self._check_cameras()
    _ = self.source_options  # SourceOptions checks its fields (ConfigError naming the flag).
    if self.smoothing_window < 1:
      raise errors.ConfigError(
          f"--smoothing_window must be >= 1, got {self.smoothing_window}.")
    if self.max_frames < 0 or self.duration_s < 0:
      raise errors.ConfigError(
          f"--max_frames and --duration_s must be >= 0 (0: no limit), got "
          f"{self.max_frames} and {self.duration_s}.")
    if self.plot_window < 1:
      raise errors.ConfigError(f"--plot_window must be >= 1, got {self.plot_window}.")


def annotate_frame(frame: np.ndarray, result: FrameResult, threshold: Optional[float],
                   smoothed: bool = False) -> np.ndarray:
  """The frame as RGB with its score (the thresholded one), the heatmap of its latent error map
  with the anomaly box and, on an alarm, an ALARM banner.

  The heatmap blends the frame towards red in proportion to each cell's error, fully red at
  twice the threshold (so a normal frame stays faint), or at the frame's own maximum without a
  threshold. The box (localize.anomaly_box) is red on an alarm, yellow otherwise.

  Args:
    frame: uint8 [H, W, 1|3], as read.
    result: the detector's result for it.
    threshold: shown next to the score when given.
    smoothed: the detector smooths; the smoothed score is shown (and labelled so).

  Returns:
    uint8 [H, W, 3].
  """
  if result.score is None:
    text = f"#{result.index} warming up"
  else:
    label = "smoothed" if smoothed else "score"
    text = f"#{result.index} {label} {result.smoothed:.4g}"
    if threshold is not None:
      text += f" / {threshold:.4g}"
  return localize.annotate(
      frame, result.error_map, text, scale=None if threshold is None else 2 * threshold,
      box_color=localize.RED if result.alarm else localize.YELLOW,
      banner="ALARM" if result.alarm else None)


def _format_score(score: Optional[float]) -> str:
  # float32 precision, shortest round-trip form, as report.write_scores_csv writes scores.
  return "" if score is None else str(np.float32(score))


def _csv_row(index: int, timestamp: float, result: FrameResult) -> Tuple:
  return (index, f"{timestamp:.6g}", _format_score(result.score), int(result.alarm))


def write_detection_csv(path: str, rows: Sequence[Tuple[int, float, FrameResult]]) -> None:
  """Writes `frame,timestamp_s,score,alarm` (empty score for unscored frames)."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(CSV_COLUMNS)
  for row in rows:
    writer.writerow(_csv_row(*row))
  with fileio.GFile(path, "w") as f:
    f.write(buffer.getvalue())


class ScoresCsvWriter:
  """scores.csv written as frames are scored: the header at once, then one flushed row per
  frame, so the file is complete up to the last frame whatever stops the process."""

  def __init__(self, path: str):
    self.path = path
    self._file = fileio.GFile(path, "w")
    self._buffer = io.StringIO()
    self._writer = csv.writer(self._buffer, lineterminator="\n")
    self._emit(CSV_COLUMNS)

  def _emit(self, row: Sequence) -> None:
    self._buffer.seek(0)
    self._buffer.truncate()
    self._writer.writerow(row)
    self._file.write(self._buffer.getvalue())
    self._file.flush()

  def append(self, index: int, timestamp: float, result: FrameResult) -> None:
    self._emit(_csv_row(index, timestamp, result))

  def close(self) -> None:
    self._file.close()


def plot_detection(path: str, rows: Sequence[Tuple[int, float, FrameResult]],
                   threshold: Optional[float], title: str) -> None:
  """Saves a PNG of the raw (and smoothed) score curve with the threshold and alarm spans.

  `rows` may be any consecutive frames (run_detection passes the last --plot_window ones).
  """
  # A bare Figure renders with Agg without touching pyplot's global state (as report.py).
  from matplotlib import figure as mpl_figure  # pylint: disable=g-import-not-at-top
  indices = np.array([index for index, _, _ in rows], np.int64)
  scored = [(index, r) for index, _, r in rows if r.score is not None]
  alarms = np.array([r.alarm for _, _, r in rows], bool)
  fig = mpl_figure.Figure(figsize=(10, 3.2), dpi=100)
  axes = fig.add_subplot(1, 1, 1)
  for span_number, (start, end) in enumerate(report.anomalous_spans(alarms)):
    axes.axvspan(indices[start] - 0.5, indices[end - 1] + 0.5, color="tab:red", alpha=0.2,
                 linewidth=0, label="alarm" if span_number == 0 else None)
  if scored:
    xs = [index for index, _ in scored]
    axes.plot(xs, [r.score for _, r in scored], color="tab:blue", linewidth=1.0,
              label="score")
    if any(r.smoothed != r.score for _, r in scored):
      axes.plot(xs, [r.smoothed for _, r in scored], color="tab:orange", linewidth=1.2,
                label="smoothed")
  if threshold is not None:
    axes.axhline(threshold, color="tab:red", linestyle="--", linewidth=1.0, label="threshold")
  # The rows may be a recent window of a long stream: the axis starts at its first frame.
  axes.set_xlim((indices[0] if len(indices) else 0) - 0.5,
                (indices[-1] if len(indices) else 0) + 0.5)
  axes.set_xlabel("frame index")
  axes.set_ylabel("raw anomaly score")
  axes.set_title(title, loc="left")
  axes.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=4, frameon=False,
              fontsize="small")
  fig.tight_layout()
  report.save_figure(fig, path)


@contextlib.contextmanager
def stop_on_signals(signals=(signal.SIGINT, signal.SIGTERM)) -> Iterator[threading.Event]:
  """Within the block, SIGINT and SIGTERM set the yielded event instead of killing the process,
  so the loop can finish its frame and close every output; the previous handlers come back
  after. Outside the main thread (where Python cannot install handlers) the event never fires.
  """
  stop = threading.Event()
  if threading.current_thread() is not threading.main_thread():
    yield stop
    return

  def handler(signum, _):
    logging.warning("%s received: stopping after the current frame.",
                    signal.Signals(signum).name)
    stop.set()

  previous = {sig: signal.signal(sig, handler) for sig in signals}
  try:
    yield stop
  finally:
    for sig, old in previous.items():
      signal.signal(sig, old)


class FrameObserver(Protocol):
  """Who watches a camera as it is scored (detect --http's page): told of every frame, gap
  and event line in the frame loop, so each call must return at once (keep references,
  encode nothing)."""

  def frame(self, index: int, timestamp: float, frame: np.ndarray,
            result: FrameResult) -> None:
    ...

  def gap(self) -> None:
    ...

  def emit(self, record: Dict[str, Any]) -> None:
    ...

  def close(self) -> None:
    ...


# Makes a camera's observer from its name and what gives its threshold and smoothing (a
# StreamingDetector, or a stream's StreamState).
Observe = Callable[[str, Any], FrameObserver]


class FrameRecorder:
  """One camera's per-frame outputs: scores.csv and events.jsonl appended and flushed per frame,
  the annotated video, running counters (no per-frame list: the stream may be endless) and the
  last `plot_window` rows (without their error maps) for scores.png, drawn by `summary`.

  detect_frames records a single input with it; multicamera.CameraRecorder each camera of a
  multi-camera run.

  Args:
    output_dir: an existing directory for scores.csv, scores.png and events.jsonl.
    camera: the camera name of the events and the plot's title.
    state: what gives the threshold and smoothing shown (a StreamingDetector, or a stream's
      StreamState); read at each frame.
    plot_window: frames shown in scores.png (the last ones).
    writer: the annotated video's writer (not closed here), or None.
    sinks: where the alarm events go besides events.jsonl (not closed here).
    observer: told of every frame, gap and event line (FrameObserver), or None.
  """

  def __init__(self, output_dir: str, camera: str, state,
               plot_window: int = DEFAULT_PLOT_WINDOW,
               writer: Optional[video_io.VideoWriter] = None,
               sinks: Sequence[events_lib.EventSink] = (),
               observer: Optional[FrameObserver] = None):
    self.output_dir = output_dir
    self.camera = camera
    self._state = state
    self._writer = writer
    self._observer = observer
    if observer is not None:
      sinks = [*sinks, observer]
    self.annotated_video: Optional[str] = None
    self._scores_csv = ScoresCsvWriter(os.path.join(output_dir, SCORES_FILE))
    self._events = events_lib.AlarmEventWriter(os.path.join(output_dir, events_lib.EVENTS_FILE),
                                               camera, sinks=sinks)
    self._recent: collections.deque = collections.deque(maxlen=max(plot_window, 1))
    self.frames = self.scored = self.alarms = self.gaps = 0
    self.first_timestamp: Optional[float] = None

  def past_duration(self, timestamp: float, duration_s: float) -> bool:
    """Whether a frame at `timestamp` is `duration_s` (> 0) or more after the first one."""
    return (bool(duration_s) and self.first_timestamp is not None
            and timestamp - self.first_timestamp >= duration_s)

  def gap(self) -> None:
    """The input was lost and is back (the caller resets the detector): an alarm open at the
    last frame before the gap ends there, as at the end of an input
    (AlarmEventWriter.close), not at the first frame after it."""
    self.gaps += 1
    if self._observer is not None:
      self._observer.gap()
    if self._events.in_alarm and self._recent:
      _, timestamp, last = self._recent[-1]
      # No box is computed for a frame out of alarm, hence no frame size.
      self._events.update(dataclasses.replace(last, alarm=False), timestamp, (0, 0))

  def record(self, index: int, timestamp: float, frame: np.ndarray,
             result: FrameResult) -> None:
    """Writes one frame's outputs."""
    if result.index != index:
      # The detector counts from 0 again after a gap; the files keep the input's frame index.
      result = dataclasses.replace(result, index=index)
    if self.first_timestamp is None:
      self.first_timestamp = timestamp
    self.frames += 1
    self.scored += result.score is not None
    self.alarms += result.alarm
    self._scores_csv.append(index, timestamp, result)
    self._events.update(result, timestamp, frame.shape[:2])
    self._recent.append((index, timestamp, dataclasses.replace(result, error_map=None)))
    if self._writer is not None:
      self._writer.write(annotate_frame(frame, result, self._state.threshold,
                                        self._state.smoothing.kind != "none"))
    if self._observer is not None:
      self._observer.frame(index, timestamp, frame, result)

  def close_files(self) -> None:
    """Closes scores.csv and events.jsonl (the writer is the caller's)."""
    self._scores_csv.close()
    self._events.close()

  def summary(self, stop_reason: str, elapsed: float,
              stopped_at: Optional[int] = None) -> DetectionSummary:
    """Draws scores.png (after close_files); the camera's summary."""
    plot_png = os.path.join(self.output_dir, PLOT_FILE)
    plot_detection(plot_png, self._recent, self._state.threshold, self.camera)
    return DetectionSummary(
        frames=self.frames, scored=self.scored, alarms=self.alarms,
        mean_fps=self.frames / max(elapsed, 1e-9), threshold=self._state.threshold,
        stopped_at=stopped_at, scores_csv=self._scores_csv.path, plot_png=plot_png,
        annotated_video=self.annotated_video, events_jsonl=self._events.path,
        events=self._events.events, stop_reason=stop_reason, gaps=self.gaps)


def detect_frames(detector: StreamingDetector,
                  frames: Iterable[Union[Tuple[int, float, np.ndarray], sources.Gap]],
                  output_dir: str, camera: str, writer: Optional[video_io.VideoWriter] = None,
                  max_frames: int = 0, duration_s: float = 0.0,
                  plot_window: int = DEFAULT_PLOT_WINDOW, log_every: int = 100,
                  stop: Optional[threading.Event] = None,
                  sinks: Sequence[events_lib.EventSink] = (),
                  observer: Optional[FrameObserver] = None) -> DetectionSummary:
  """The detection loop: scores each frame, appends it to scores.csv and writes alarm events.

  Memory stays bounded on an endless iterator: scores.csv and events.jsonl are appended and
  flushed as frames come, totals are counters, and only the last `plot_window` rows (without
  their error maps) are kept, for scores.png, drawn at the end.

  Args:
    detector: the streaming detector.
    frames: (index, timestamp_s, uint8 frame) tuples, as video_io.iter_frames yields them,
      and sources.Gap items (a live input lost and reopened, or its clock jumped: the detector
      is reset, so no clip spans the gap, and an open alarm ends at the last frame before it);
      a sources.Source is such an iterable.
    output_dir: an existing directory for scores.csv, scores.png and events.jsonl.
    camera: the camera name of the events and the plot's title.
    writer: the annotated video's writer (not closed here), or None.
    max_frames: stop after this many frames (0: no limit).
    duration_s: stop at the first frame this many seconds of stream time after the first
      (0: no limit).
    plot_window: frames shown in scores.png (the last ones).
    log_every: frames between progress lines.
    stop: when set (stop_on_signals), the loop ends after the current frame (a live source
      given the same event also stops waiting to reopen).
    sinks: where the alarm events go besides events.jsonl (not closed here).
    observer: told of every frame, gap and event (FrameObserver), or None.

  Returns:
    DetectionSummary (annotated_video None: the caller knows it).

  Raises:
    errors.DataError: no frame could be read.
  """
  recorder = FrameRecorder(output_dir, camera, detector, plot_window, writer, sinks, observer)
  stopped_at, stop_reason = None, STOP_END
  start = window_start = time.perf_counter()
  try:
    for item in frames:
      if isinstance(item, sources.Gap):
        recorder.gap()
        detector.reset()
        logging.warning("Gap of %.1f s in the input before frame %d (%s): the detector starts "
                        "over, the next %d frames are not scored.", item.gap_s, item.index,
                        item.reason, detector.data_cfg.clip_span)
        continue
      index, timestamp, frame = item
      if recorder.past_duration(timestamp, duration_s):
        stop_reason = STOP_DURATION
        break
      recorder.record(index, timestamp, frame, detector.process(frame))
      if log_every and recorder.frames % log_every == 0:
        now = time.perf_counter()
        logging.info("frame %d: %.1f fps (last %d frames), %d alarms so far", index,
                     log_every / max(now - window_start, 1e-9), log_every, recorder.alarms)
        window_start = now
      if max_frames and recorder.frames >= max_frames:
        stop_reason = STOP_MAX_FRAMES
        break
      if stop is not None and stop.is_set():
        stop_reason = STOP_SIGNAL
        break
  except (video_io.DecodeStopped, sources.SourceLost) as e:
    if not recorder.frames:
      raise errors.DataError(f"No frame could be read: {e.reason}") from e
    stopped_at = e.index
    stop_reason = STOP_SOURCE_LOST if isinstance(e, sources.SourceLost) else STOP_DECODE
    logging.warning("%s; writing the results of the %d frames read.", e, recorder.frames)
  finally:
    if hasattr(frames, "close"):
      frames.close()  # A generator over a video file closes its container.
    recorder.close_files()
  if stop_reason == STOP_END and stop is not None and stop.is_set():
    stop_reason = STOP_SIGNAL  # A live source stopped waiting for its stream.
  return recorder.summary(stop_reason, time.perf_counter() - start, stopped_at)


def camera_name_of(input_path: str) -> str:
  """The default camera name: the input's base name without its extension (a URL's last path
  segment, or its host:port when it has no path)."""
  if sources.url_scheme(input_path):
    split = parse.urlsplit(input_path)
    segments = [segment for segment in split.path.split("/") if segment]
    if not segments:
      # hostname and port only: a URL's user and password must not end up in events.
      return f"{split.hostname or 'camera'}{f'_{split.port}' if split.port else ''}"
    input_path = segments[-1]
  name = os.path.splitext(os.path.basename(input_path.rstrip("/")))[0]
  return name or "camera"


def annotated_writer(output_dir: str, fps: float) -> Tuple[video_io.VideoWriter, str]:
  """(writer, path) of a camera's annotated video in output_dir: annotated.mp4 (or .avi, by
  the encoders FFmpeg has); frames of another size than the first are resized to it."""
  codec, extension = video_io.pick_output_format()
  video_path = os.path.join(output_dir, ANNOTATED_BASENAME + extension)
  return video_io.VideoWriter(video_path, fps=fps, codec=codec, fit_size=True), video_path


def run_detection(cfg: DetectConfig, observe: Optional[Observe] = None) -> DetectionSummary:
  """Runs the streaming detector over a recorded video, a frames folder or a live input.

  Writes, as frames are scored, `<output_dir>/scores.csv` (frame,timestamp_s,score,alarm; empty
  score for the first clip_span frames) and `<output_dir>/events.jsonl` (see
  events.AlarmEventWriter), whose records `cfg.mqtt` also publishes (mqtt.MqttSink); at the end
  `<output_dir>/scores.png` (the last `plot_window` frames); with `annotate`,
  `<output_dir>/annotated.mp4` (libx264) or `annotated.avi` (mpeg4 or mjpeg, whichever encoder
  FFmpeg has), with the error heatmap and the anomaly box, at the input's frame rate (else
  cfg.fps).

  It stops at the end of the input, after `max_frames`, after `duration_s` of stream time, or
  after the current frame on SIGINT or SIGTERM; every output is then closed complete. A video
  that stops decoding part-way keeps the frames before and `stopped_at` says where it stopped.
  A live input (sources.open_source) is reopened when lost, the detector restarting after
  each gap, until the reconnection limits give up on it ("source_lost").

  Args:
    cfg: what to run on what (DetectConfig).
    observe: makes the camera's FrameObserver (detect --http), or None.

  Returns:
    DetectionSummary.

  Raises:
    FileNotFoundError: input_path (a file or folder), or the model's config or checkpoint, is
      missing.
    config.ConfigError: a bad smoothing_window, fps, limit, plot_window, runtime option or
      live-input option.
    errors.DataError: the input holds no readable frame, or a live input cannot be opened.
  """
  if len(cfg.inputs) != 1:
    raise errors.ConfigError(f"run_detection runs one input, got {len(cfg.inputs)}: "
                             "multicamera.run_multi_detection runs several.")
  if not sources.is_live(cfg.input_path) and not fileio.exists(cfg.input_path):
    raise FileNotFoundError(
        f"Input {cfg.input_path!r} does not exist: give a video file, a folder of frames, a "
        "stream URL (rtsp://, http://, udp://, ...) or a camera device.")
  if not fileio.isdir(cfg.model_dir):
    raise FileNotFoundError(f"Model directory {cfg.model_dir!r} does not exist.")
  detector = StreamingDetector.from_model_dir(cfg.model_dir, cfg.threshold,
                                              cfg.smoothing_window, cfg.runtime_options,
                                              score=cfg.score, smoothing=cfg.smoothing)
  if detector.threshold is None:
    logging.warning("No threshold (no --threshold, none stored with %s): scores only, no "
                    "alarms.", cfg.model_dir)
  fileio.makedirs(cfg.output_dir)
  camera = cfg.cameras[0]
  sinks = [] if cfg.mqtt is None else [mqtt_lib.MqttSink(cfg.mqtt)]
  try:
    with stop_on_signals() as stop:
      # Opened last: a live stream's frames would otherwise queue up while the model loads.
      source = sources.open_source(cfg.input_path, cfg.source_options, stop)
      writer, video_path = (annotated_writer(cfg.output_dir, source.fps) if cfg.annotate
                            else (None, None))
      try:
        summary = detect_frames(
            detector, source, cfg.output_dir, camera, writer, max_frames=cfg.max_frames,
            duration_s=cfg.duration_s, plot_window=cfg.plot_window, log_every=cfg.log_every,
            stop=stop, sinks=sinks,
            observer=None if observe is None else observe(camera, detector))
      except errors.DataError as e:
        raise errors.DataError(f"Input {sources.redact(cfg.input_path)!r}: {e}") from e
      finally:
        source.close()
        if writer is not None:
          writer.close()
  finally:
    for sink in sinks:
      sink.close()  # Bounded: a broker that is gone never holds the exit.
  summary = dataclasses.replace(summary, annotated_video=video_path)
  logging.info("frames=%d scored=%d alarms=%d events=%d gaps=%d mean_fps=%.1f stop=%s%s; "
               "wrote %s", summary.frames, summary.scored, summary.alarms, summary.events,
               summary.gaps, summary.mean_fps, summary.stop_reason,
               "" if summary.stopped_at is None else
               f" ({_STOPPED_AT[summary.stop_reason]} at frame {summary.stopped_at})",
               cfg.output_dir)
  return summary
