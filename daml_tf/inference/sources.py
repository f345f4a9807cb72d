"""The detector's inputs: video files, frames folders, network streams and V4L2 cameras.

`open_source(path, options)` is the one place an input is opened; it returns a `Source` whose
iterator yields `(index, timestamp_s, uint8 frame)` tuples as video_io.iter_frames does and, for
a live input, a `Gap` item before the first frame after the stream was lost and found again, or
after its own clock jumped (frames missing, or the sender started over).

- A video file or a frames folder (local, or any tf.io.gfile filesystem) is read exactly as
  video_io.iter_frames reads it: its end is the end, a decoding failure part-way raises
  video_io.DecodeStopped after every earlier frame.
- A stream URL (rtsp://, rtsps://, rtmp://, http(s)://, udp://, rtp://, tcp://, srt://: anything
  the FFmpeg inside PyAV opens) or a V4L2 device (/dev/video0, FFmpeg's v4l2 input) is live:
  each open and each read waits at most `read_timeout_s`; when the stream ends, fails or stalls
  it is reopened with exponential backoff until a frame comes again (or the limits of
  `SourceOptions` say to give up: `SourceLost`). Frame indices keep increasing across gaps and
  timestamps are wall-clock seconds since the source was opened, since a camera's own clock
  restarts with each connection. An http(s) URL whose server states a length is a file served
  over HTTP, not a stream: its end is the end.

A live stream that cannot be opened at all at the start is an errors.DataError naming the URL
(a typo should not wait for a camera forever); after the first frame, it is waited for.
"""

import collections
import dataclasses
import os
import stat
import threading
import time
from typing import Callable, Dict, Iterator, Optional, Tuple, Union
from urllib import parse

from absl import logging
import numpy as np
import tensorflow as tf

from daml_tf import fileio
from daml_tf import errors
from daml_tf.data import video_io

Frame = Tuple[int, float, np.ndarray]
RTSP_TRANSPORTS = ("tcp", "udp", "udp_multicast", "http", "https")
V4L2_FORMAT = "v4l2"
_ENDED = "the stream ended"
# Frames further apart on the stream's clock than the larger of these are not one clip.
_MAX_CLOCK_STEP_S = 1.0
_MAX_CLOCK_STEP_FRAMES = 5
# Arrival times kept for a clock jump's gap_s (frames held back by the demuxer and decoder).
_ARRIVALS_KEPT = 4


@dataclasses.dataclass(frozen=True)
class SourceOptions:
  """How inputs are read (the same for every input of a run).

  Attributes:
    fps: frame rate of a frames folder, and of a file or stream that states none.
    read_timeout_s: a live input whose open, or whose next packet, takes longer counts as
      dropped.
    reconnect_initial_s: wait before the first reopen of a dropped live input; doubled after
      each failed attempt...
    reconnect_max_s: ...up to this.
    max_reconnects: give up after this many failed reopens in a row (0: never).
    give_up_after_s: give up when a live input has sent no frame for this long (0: never).
    rtsp_transport: RTSP's transport; TCP (the default) loses no packet on a busy network,
      where UDP drops parts of frames.
    ffmpeg_options: (key, value) options for FFmpeg's demuxer and protocol, after the ones set
      here (e.g. ("video_size", "640x480") for a V4L2 camera).
  """

  fps: float = video_io.DEFAULT_FPS
  read_timeout_s: float = 10.0
  reconnect_initial_s: float = 1.0
  reconnect_max_s: float = 30.0
  max_reconnects: int = 0
  give_up_after_s: float = 0.0
  rtsp_transport: str = "tcp"
  ffmpeg_options: Tuple[Tuple[str, str], ...] = ()

  def __post_init__(self):
    if self.fps <= 0:
      raise errors.ConfigError(f"--fps must be > 0, got {self.fps}.")
    if self.read_timeout_s <= 0:
      raise errors.ConfigError(f"--read_timeout_s must be > 0, got {self.read_timeout_s}.")
    if not 0 < self.reconnect_initial_s <= self.reconnect_max_s:
      raise errors.ConfigError(
          f"Need 0 < --reconnect_initial_s <= --reconnect_max_s, got "
          f"{self.reconnect_initial_s} and {self.reconnect_max_s}.")
    if self.max_reconnects < 0 or self.give_up_after_s < 0:
      raise errors.ConfigError(
          f"--max_reconnects and --give_up_after_s must be >= 0 (0: never give up), got "
          f"{self.max_reconnects} and {self.give_up_after_s}.")
    if self.rtsp_transport not in RTSP_TRANSPORTS:
      raise errors.ConfigError(f"--rtsp_transport must be one of {RTSP_TRANSPORTS}, got "
                               f"{self.rtsp_transport!r}.")


def parse_ffmpeg_options(specs) -> Tuple[Tuple[str, str], ...]:
  """("key=value", ...) as SourceOptions.ffmpeg_options; a spec without "=" is a ConfigError."""
  pairs = []
  for spec in specs or ():
    key, sep, value = spec.partition("=")
    if not sep or not key:
      raise errors.ConfigError(f"--input_options takes key=value items, got {spec!r}.")
    pairs.append((key.strip(), value.strip()))
  return tuple(pairs)


@dataclasses.dataclass(frozen=True)
class Gap:
  """A live input was lost and is back, or its clock jumped: the frames before and after are
  not one clip.

  Attributes:
    index: the index of the next frame (the first after the gap).
    gap_s: wall-clock seconds from when the stream went silent (its end or failure, or the start
      of the read that timed out) to the first frame after the gap; for a clock jump, about
      the pause: the longest wait between the last few frames received.
    attempts: the reopens it took (the successful one included); 0 for a clock jump, where the
      stream went on without a reopen.
    reason: why the stream was lost, or how far its clock jumped.
  """

  index: int
  gap_s: float
  attempts: int
  reason: str


Item = Union[Frame, Gap]


class SourceLost(errors.InputStopped):
  """A live input stayed lost beyond SourceOptions' limits; every earlier frame was yielded.

  Attributes:
    index: the number of frames yielded (the index the next frame would have had).
    path: the input.
    reason: what went wrong, for messages.
  """

  def _message(self) -> str:
    return f"Gave up on {self.path!r} after frame {self.index - 1}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class Protocol:
  """What a stream URL scheme needs.

  Attributes:
    live: its end is a drop (reopen), not the end; None: live unless the server states the
      resource's length (http: a served file has one, a live stream has none).
    options: FFmpeg options for it, from the source options.
  """

  live: Optional[bool] = True
  options: Callable[[SourceOptions], Dict[str, str]] = lambda _: {}


# A slow consumer must not end a UDP stream: FFmpeg's receive buffer overflowing is fatal by
# default; with overrun_nonfatal the lost packets only damage frames, which are skipped.
_UDP = Protocol(options=lambda _: {"overrun_nonfatal": "1"})
_RTSP = Protocol(options=lambda o: {"rtsp_transport": o.rtsp_transport})
_HTTP = Protocol(live=None)
PROTOCOLS: Dict[str, Protocol] = {
    "rtsp": _RTSP, "rtsps": _RTSP, "rtmp": Protocol(), "rtmps": Protocol(),
    "http": _HTTP, "https": _HTTP, "udp": _UDP, "rtp": _UDP, "tcp": Protocol(),
    "srt": Protocol(),
}


def url_scheme(path: str) -> str:
  """The lower-case URL scheme of `path` ("" for a plain path)."""
  return parse.urlsplit(path).scheme.lower() if "://" in path else ""


def redact(path: str) -> str:
  """`path` with a URL's password replaced by ***: logs and messages must not show it."""
  split = parse.urlsplit(path) if url_scheme(path) else None
  if split is None or split.password is None:
    return path
  host = split.netloc.rpartition("@")[2]
  return parse.urlunsplit(split._replace(netloc=f"{split.username}:***@{host}"))


def is_device(path: str) -> bool:
  """A character device, such as a V4L2 camera (/dev/video0)."""
  try:
    return stat.S_ISCHR(os.stat(path).st_mode)
  except (OSError, ValueError):
    return False


def is_live(path: str) -> bool:
  """`path` is opened as a live input (a stream URL or a device), not as a file or folder."""
  return url_scheme(path) in PROTOCOLS or is_device(path)


class Source:
  """An opened input: iterate it once for frames (and Gap items); close it when done.

  Attributes:
    path: the input as given.
    live: a live input (its end is a drop; timestamps are wall-clock).
    fps: its frame rate: the file's or stream's own, else SourceOptions.fps.
  """

  def __init__(self, path: str, live: bool, fps: float, items: Iterator[Item]):
    self.path = path
    self.live = live
    self.fps = fps
    self._items = items

  def __iter__(self) -> Iterator[Item]:
    return self._items

  def close(self) -> None:
    """Stops reading and releases the input (its container, its connection); call it from the
    thread that iterates the source."""
    close = getattr(self._items, "close", None)
    if close is not None:
      close()


def _open_file(path: str, options: SourceOptions, stop: threading.Event) -> Source:
  del stop  # A file is read to its end; the consumer checks stop between frames.
  if not fileio.exists(path):
    raise FileNotFoundError(
        f"Input {path!r} does not exist: give a video file "
        f"({', '.join(video_io.VIDEO_EXTENSIONS)}), a folder of frames, a stream URL (rtsp://, "
        "http://, udp://, ...) or a camera device.")
  return Source(path, live=False, fps=video_io.video_fps(path, options.fps),
                items=video_io.iter_frames(path, options.fps))


class _LiveReader:
  """Opens, reads and reopens one stream URL or device with PyAV (see the module doc)."""

  def __init__(self, path: str, av_format: Optional[str], protocol: Protocol,
               options: SourceOptions, stop: threading.Event):
    self._url = path
    self.path = redact(path)  # For messages.
    self._format = av_format
    self._protocol = protocol
    self._options = options
    self._stop = stop
    self._ffmpeg_options = {**protocol.options(options), **dict(options.ffmpeg_options)}
    self.live = bool(protocol.live)
    self.fps = options.fps
    self._index = 0
    # _silent_since: since when the stream has sent nothing, once it is lost; _lost_at: that
    # of the current gap.
    self._start = self._silent_since = self._lost_at = time.monotonic()
    self._reason = ""
    # The stream time of the last frame of the current container, and when the last few came.
    self._previous_time: Optional[float] = None
    self._arrivals: collections.deque = collections.deque(maxlen=_ARRIVALS_KEPT)

  def open(self):
    """A PyAV container of the input, with its video stream checked; raises on failure."""
    import av  # pylint: disable=g-import-not-at-top
    # PyAV's timeout interrupts FFmpeg's blocking calls whatever the protocol: the open
    # (probing included), then each packet read.
    container = av.open(self._url, format=self._format,
                        container_options=dict(self._ffmpeg_options),
                        timeout=(self._options.read_timeout_s, self._options.read_timeout_s))
    if not container.streams.video:
      container.close()
      raise errors.DataError(f"Input {self.path!r} has no video stream.")
    return container

  def open_first(self):
    """The first open: a failure is a DataError naming the input, not a wait."""
    import av  # pylint: disable=g-import-not-at-top
    try:
      container = self.open()
    except (av.error.FFmpegError, OSError) as e:
      raise errors.DataError(f"Cannot open the live input {self.path!r}: {self._describe(e)}. "
                             "Check the URL (or device) and that it is streaming.") from e
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    if rate and 0 < float(rate) < 1000:
      self.fps = float(rate)
    if self._protocol.live is None:
      # A stream sent as it is produced has no length; a file served over HTTP has one.
      self.live = container.size < 0
    self._start = self._silent_since = self._lost_at = time.monotonic()
    logging.info("Opened %s (%s, %s, %.3g frames/s%s).", self.path, container.format.name,
                 stream.codec_context.name, self.fps,
                 "; live: reopened when lost" if self.live else "")
    return container

  def _describe(self, error: Exception) -> str:
    import av  # pylint: disable=g-import-not-at-top
    if isinstance(error, av.error.ExitError):
      return f"no data within --read_timeout_s={self._options.read_timeout_s:g} s"
    return str(error).replace(self._url, self.path)

  def _decoded(self, container) -> Iterator[Tuple[Optional[float], np.ndarray]]:
    """(stream time or None, RGB frame) of the container until its stream ends or fails
    (self._reason says how)."""
    import av  # pylint: disable=g-import-not-at-top
    stream = container.streams.video[0]
    damaged = 0
    try:
      for packet in container.demux(stream):
        try:
          frames = packet.decode()
        except av.error.InvalidDataError:
          # A packet damaged in transit (lost datagrams, a cut at a reconnect): skip it, as a
          # player does; the decoder recovers at the next key frame.
          damaged += 1
          continue
        for frame in frames:
          yield frame.time, frame.to_ndarray(format="rgb24")
      self._reason, self._silent_since = _ENDED, time.monotonic()
    except (av.error.FFmpegError, OSError) as e:
      # A read that timed out had waited read_timeout_s for data. (Not the time of the last
      # packet: MPEG-TS holds a frame's packet until the next one starts, so the last comes
      # out only at the failure.)
      waited = self._options.read_timeout_s if isinstance(e, av.error.ExitError) else 0.0
      self._reason, self._silent_since = self._describe(e), time.monotonic() - waited
    if damaged:
      logging.warning("%s: skipped %d damaged packets.", self.path, damaged)

  def _reopen(self, failures: int, delay: float):
    """Reopens after a drop, waiting `delay` before each attempt and doubling it after each
    failure.

    Returns:
      (container, failures, delay): the open container (None when stop is set), the failed
      attempts so far, and the next wait.

    Raises:
      SourceLost: the limits of SourceOptions are reached.
    """
    import av  # pylint: disable=g-import-not-at-top
    options = self._options
    logging.warning("%s lost after frame %d: %s; reopening in %.1f s.", self.path,
                    self._index - 1, self._reason, delay)
    while True:
      silent = time.monotonic() - self._lost_at
      if options.max_reconnects and failures >= options.max_reconnects:
        raise SourceLost(self._index, self.path, f"{failures} reopens in a row failed, no data "
                         f"for {silent:.1f} s (--max_reconnects); last: {self._reason}")
      if options.give_up_after_s and silent + delay > options.give_up_after_s:
        raise SourceLost(self._index, self.path, f"no data for {silent:.1f} s and the next "
                         f"reopen would pass --give_up_after_s; last: {self._reason}")
      if self._stop.wait(delay):
        return None, failures, delay
      try:
        container = self.open()
      except (av.error.FFmpegError, OSError, errors.DataError) as e:
        failures += 1
        self._reason = f"reopen failed: {self._describe(e)}"
        delay = min(2 * delay, options.reconnect_max_s)
        logging.warning("Reopening %s failed (attempt %d, no data for %.1f s): %s; next "
                        "attempt in %.1f s.", self.path, failures,
                        time.monotonic() - self._lost_at, self._describe(e), delay)
        continue
      logging.warning("Reopened %s (attempt %d), %.1f s after it went silent.", self.path,
                      failures + 1, time.monotonic() - self._lost_at)
      return container, failures, delay

  def items(self, container) -> Iterator[Item]:
    """Frames of `container` (open_first's), then of each reopen, with a Gap between (and
    before a frame after a clock jump)."""
    initial, most = self._options.reconnect_initial_s, self._options.reconnect_max_s
    # lost: why the stream was lost, until a frame comes again (None while frames flow).
    failures, delay, lost = 0, initial, None
    try:
      while container is not None:
        self._previous_time = None
        self._arrivals.clear()
        for frame_time, frame in self._decoded(container):
          now = time.monotonic()
          if lost is not None:
            yield Gap(self._index, now - self._lost_at, failures + 1, lost)
            failures, delay, lost = 0, initial, None
          else:
            jump = self._clock_jump(frame_time, now)
            if jump is not None:
              yield jump
          self._previous_time = frame_time
          self._arrivals.append(now)
          yield self._index, now - self._start, frame
          self._index += 1
        container.close()
        container = None
        if not self.live:
          return self._end_of_file()
        if lost is not None:
          # Reopened, but lost again before a frame came: a failed attempt all the same.
          failures, delay = failures + 1, min(2 * delay, most)
        else:
          lost, self._lost_at = self._reason, self._silent_since
        if self._stop.is_set():
          return None
        container, failures, delay = self._reopen(failures, delay)
    finally:
      if container is not None:
        container.close()

  def _clock_jump(self, frame_time: Optional[float], now: float) -> Optional[Gap]:
    """A Gap when the stream's own clock says frames are missing before this one (a jump
    forward of more than max(1 s, 5 frames)) or that the stream started over (a jump back:
    a restarted encoder, or a UDP sender back within read_timeout_s), else None.

    The stream's clock, not the arrival times: frames that come late in a burst (a network
    stall) are still one clip, frames that never came are not. An MPEG-TS clock wraps round
    every 26.5 hours; that jump back costs one warm-up.
    """
    if not self.live or frame_time is None or self._previous_time is None:
      return None
    step = frame_time - self._previous_time
    if 0 <= step <= max(_MAX_CLOCK_STEP_S, _MAX_CLOCK_STEP_FRAMES / self.fps):
      return None
    reason = f"the stream's clock jumped by {step:+.2f} s"
    logging.warning("%s: %s after frame %d.", self.path, reason, self._index - 1)
    # The longest of the last waits between frames: the demuxer and the decoder hold the last
    # frame or two before a pause until the next packets come, so they arrive with the frame
    # after it.
    arrivals = list(self._arrivals) + [now]
    return Gap(self._index, float(np.max(np.diff(arrivals))), 0, reason)

  def _end_of_file(self) -> None:
    if self._reason != _ENDED:
      raise video_io.DecodeStopped(self._index, self.path, self._reason)
    if not self._index:
      raise errors.DataError(f"Input {self.path!r} holds no decodable frame.")


def _open_live(path: str, av_format: Optional[str], protocol: Protocol, options: SourceOptions,
               stop: threading.Event) -> Source:
  reader = _LiveReader(path, av_format, protocol, options, stop)
  container = reader.open_first()
  return Source(path, live=reader.live, fps=reader.fps, items=reader.items(container))


def open_source(path: str, options: SourceOptions = SourceOptions(),
                stop: Optional[threading.Event] = None) -> Source:
  """Opens any input of the detector (see the module doc): the one function that does.

  Args:
    path: a video file, a frames folder, a stream URL or a V4L2 device.
    options: timeouts, reconnection and frame rate (SourceOptions).
    stop: when set (e.g. by detection.stop_on_signals), a live source ends instead of waiting
      to reopen; a blocked read returns within read_timeout_s.

  Returns:
    Source, already open (a live input's first open has succeeded).

  Raises:
    FileNotFoundError: a file or folder that does not exist.
    errors.DataError: a live input that cannot be opened, or has no video stream.
  """
  stop = stop or threading.Event()
  scheme = url_scheme(path)
  if scheme in PROTOCOLS:
    return _open_live(path, None, PROTOCOLS[scheme], options, stop)
  if is_device(path):
    return _open_live(path, V4L2_FORMAT, Protocol(), options, stop)
  return _open_file(path, options, stop)
