"""Evidence of every alarm on disk: a video clip and two snapshots per event.

Each event has a folder `<camera_dir>/events/<event_id>/` holding

  clip.mp4            the frames from `pre_capture_s` before the event's start to
                      `post_capture_s` after its end;
  snapshot.jpg        the frame of the event's highest score so far, annotated by the caller
                      (heatmap, box, score);
  snapshot-clean.jpg  the same frame as the camera gave it.

No file is ever half-written under one of these names:

* The clip is written as fragmented MP4 (an empty `moov`, then one `moof`+`mdat` fragment per
  keyframe, a keyframe about every KEYFRAME_INTERVAL_S) under `clip.mp4.part`, fsynced and
  renamed to `clip.mp4` once complete. A process killed mid-clip, even by SIGKILL, leaves
  `clip.mp4.part` holding every fragment finished before the kill: a playable prefix of the
  clip, short of the last second or so (the fragment in progress and the frames still queued).
* A snapshot is written under a temporary name (`.tmp`) in the same folder, fsynced and renamed
  over the final name (os.replace): a reader sees the previous file or the new one.

So `clip.mp4` exists only for a finished event; a `clip.mp4.part` without it is an event still
recording or cut short by a crash (its prefix plays), which the retention module tells apart
with `open_event_ids()` of the running recorder.

Threads. The caller (the camera's frame loop) calls add_frame, start, end and snapshot; these
only append to a ring and to a queue, under a lock held for microseconds. One background
thread per recorder encodes the clips and writes the snapshot files (PyAV converts and encodes
without holding the GIL, so the encoding runs beside the frame loop, on another core). Nothing
the caller does waits for the encoder or the disk: when the writer falls behind by more than
`max_queued_frames` frames, further frames are dropped from the clips (counted in `stats()`,
logged once per clip and in the clip's summary line); the start and end of a clip and the
snapshots are never dropped.

Memory, bounded:
* the ring: the last `ring_size` = ceil(pre_capture_s * fps) + 1 frames (a deque with that
  maxlen; the + 1 is the frame at the start itself, added before or after `start`);
* the queue: at most `max_queued_frames` frames, plus the pre-capture frames of each starting
  clip (which the ring held anyway) and at most one pending snapshot per event.
Frames are kept by reference: the caller must not modify an array after handing it over (a
frame decoded by PyAV is a new array each time, so nothing needs copying).

The clip shows the annotated frames (`annotated_clip=True`, the default) or the clean ones. An
annotation given as a callable is evaluated lazily, once, in the writer thread, and only for
frames that go into a clip: the frame loop does not draw heatmaps for the frames no alarm
needs. Such a callable must therefore use only data it captured, never state the frame loop
goes on changing.

Re-encoding decoded frames costs CPU per frame (see the measurements at X264_PRESET). Remuxing
the camera's own compressed packets (as Frigate records) would cost almost nothing, but needs
the packets (and a pre-capture ring of them starting at a keyframe), and the frame sources
(inference.sources) decode each packet and hand out frames only; it is not done here.
"""

import collections
import fractions
import io
import math
import os
import re
import threading
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple, Union

from absl import logging
import av
import numpy as np
from PIL import Image

EVENTS_DIR = "events"
CLIP_FILE = "clip.mp4"
PART_SUFFIX = ".part"
SNAPSHOT_FILE = "snapshot.jpg"
CLEAN_SNAPSHOT_FILE = "snapshot-clean.jpg"
TMP_SUFFIX = ".tmp"
# Fragmented MP4: the header first (empty_moov), a fragment at every keyframe; flush_packets
# makes FFmpeg hand each finished fragment to the kernel at once instead of keeping it in its
# 32 KiB write buffer, so a killed process loses only the fragment in progress.
MP4_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
# A keyframe (hence a fragment on disk) about every second: what a crash can lose at most,
# besides the queue; shorter costs bits (a keyframe is several times the size of a P-frame).
KEYFRAME_INTERVAL_S = 1.0
# Encoders in order of preference: H.264 plays everywhere (browsers, Home Assistant); MPEG-4
# part 2 is the fallback of an FFmpeg build without libx264.
CODECS = ("libx264", "mpeg4")
# libx264's speed preset, chosen on tools/clip_encoding_cost.py (PyAV 18.1 with its FFmpeg
# 8.1.2, one encoder thread, a loaded 2-core x86-64 VM; a synthetic 10 fps camera scene with
# sensor noise of sigma 3 / sigma 8 gray levels; CPU ms per frame including the RGB to YUV
# conversion and the muxing, kB per frame, PSNR in dB):
#                      640x360                         240x360 (W x H)
#   libx264 ultrafast  1.5 / 2.0 ms   9 / 50 kB  36 / 30    0.6 / 0.8 ms  4.5 / 19 kB  35 / 30
#   libx264 veryfast   3.2 / 6.4 ms   6 / 33 kB  35 / 30    1.6 / 2.6 ms  3.3 / 13 kB  35 / 29
#   mpeg4 (0.2 bpp)    1.1 / 1.1 ms   6 /  6 kB  35 / 28    0.5 / 0.5 ms  2.2 /  2 kB  34 / 28
# veryfast: its clips are a third smaller than ultrafast's at the same CRF (and noisy night
# scenes are where the bytes go), for 2 to 4 ms more per 640x360 frame: at most 16 % of one
# core at 25 fps, and only while an event records. mpeg4 is cheaper still at a fixed bit rate,
# but noisy scenes lose quality, and many browsers (so Home Assistant's media browser) do not
# play MPEG-4 part 2: it is the fallback of an FFmpeg without libx264 only. x264's own
# threads (sliced, with zerolatency) saved no time at these sizes.
X264_PRESET = "veryfast"
X264_CRF = 23
# MPEG-4 part 2 has no CRF: its bit rate, in bits per pixel per frame (0.2 is about
# 460 kb/s for 640x360 at 10 fps).
MPEG4_BITS_PER_PIXEL = 0.2
# The default bound of the writer's queue, in seconds of frames.
QUEUE_S = 2.0
# Frame times are compared with this tolerance: t = i / fps computed two ways may differ in
# the last bits, which must not move a frame in or out of a clip.
_EPS_S = 1e-6
# libx264 clips keep each frame's own time, to the millisecond. MPEG-4 part 2's rate control
# takes 1 / time_base for the frame rate (a millisecond time base made its frames 10 times the
# bit rate), so its clips count time in frame periods of the nominal rate instead.
_X264_TIME_BASE = fractions.Fraction(1, 1000)
_EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

Annotation = Union[np.ndarray, Callable[[], np.ndarray], None]


def check_event_id(event_id: str) -> str:
  """event_id (e.g. alarms.alarm_id's `1718000000.500000-x7k2qa`), if it can name a folder (letters, digits, '.', '_', '-'; not starting with '.'
  or '-'; at most 128 characters); raises ValueError otherwise."""
  if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
    raise ValueError(f"Bad event id {event_id!r}: use letters, digits, '.', '_' and '-', "
                     "starting with a letter or digit, at most 128 characters.")
  return event_id


def event_dir(camera_dir: str, event_id: str) -> str:
  """The folder of an event's files."""
  return os.path.join(camera_dir, EVENTS_DIR, check_event_id(event_id))


def as_rgb(frame: np.ndarray) -> np.ndarray:
  """uint8 [H, W, 3] of a uint8 [H, W, 3], [H, W, 1] or [H, W] frame."""
  frame = np.asarray(frame)
  if frame.dtype != np.uint8:
    raise ValueError(f"Frames must be uint8, got {frame.dtype}.")
  if frame.ndim == 2:
    frame = frame[..., None]
  if frame.ndim != 3 or frame.shape[-1] not in (1, 3):
    raise ValueError(f"Frames must be [H, W, 3], [H, W, 1] or [H, W], got {frame.shape}.")
  return np.repeat(frame, 3, axis=-1) if frame.shape[-1] == 1 else frame


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
  """The JPEG bytes of a uint8 frame (RGB or gray)."""
  buffer = io.BytesIO()
  Image.fromarray(as_rgb(frame)).save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue()


def _fsync_dir(folder: str) -> None:
  # The rename itself survives a power cut only once the folder's entry is on disk.
  fd = os.open(folder, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def write_atomic(path: str, data: bytes) -> None:
  """Writes `data` to `path` so that a reader (or a crash) sees the old file or the new one:
  a temporary file in the same folder, fsynced, then os.replace."""
  tmp = path + TMP_SUFFIX
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  _fsync_dir(os.path.dirname(path) or ".")


_codec_choice: Optional[str] = None


def pick_codec() -> str:
  """The first encoder of CODECS that PyAV's FFmpeg has."""
  global _codec_choice
  if _codec_choice is None:
    for codec in CODECS:
      try:
        av.codec.Codec(codec, "w")
      except (av.error.FFmpegError, ValueError):
        continue
      _codec_choice = codec
      break
    else:
      raise RuntimeError(f"PyAV's FFmpeg has none of the encoders {', '.join(CODECS)}.")
  return _codec_choice


class ClipWriter:
  """Frames into one fragmented MP4 file, with their own timestamps (variable frame rate).

  The file is created at the first frame, whose size becomes the clip's: odd sizes are padded
  by one edge pixel (4:2:0 needs even ones) and frames of another size (a camera back from an
  outage at another resolution) are resized to it. Frame times are kept to the millisecond
  with libx264, rounded to a period of `fps` with mpeg4; a frame whose time is not after the
  previous one's is shown one such tick after it.

  Args:
    path: the file (the container is MP4 whatever its name ends with).
    fps: the nominal frame rate (the keyframe interval and mpeg4's bit rate follow from it).
    codec: an FFmpeg encoder; None: pick_codec().
    x264_preset: libx264's preset.
    threads: encoder threads. One: a service runs a clip per alarmed camera beside detection,
      and x264's frame threads each add a frame of delay before a fragment reaches the disk.
  """

  def __init__(self, path: str, fps: float, codec: Optional[str] = None,
               x264_preset: str = X264_PRESET, threads: int = 1):
    self.path = path
    self.fps = float(fps)
    self.codec = codec or pick_codec()
    self.x264_preset = x264_preset
    self.threads = threads
    self.frames = 0
    self.first_s: Optional[float] = None
    self.last_s: Optional[float] = None
    self._container = None
    self._stream = None
    self._size: Optional[Tuple[int, int]] = None
    self._last_pts = -1
    self._time_base = (_X264_TIME_BASE if self.codec == "libx264"
                       else 1 / fractions.Fraction(self.fps).limit_denominator(1001))

  def _open(self, height: int, width: int) -> None:
    self._container = av.open(self.path, "w", format="mp4", container_options=MP4_OPTIONS)
    stream = self._container.add_stream(
        self.codec, rate=fractions.Fraction(self.fps).limit_denominator(1001))
    stream.width = width + width % 2
    stream.height = height + height % 2
    stream.pix_fmt = "yuv420p"
    context = stream.codec_context
    context.time_base = self._time_base
    context.gop_size = max(1, int(round(self.fps * KEYFRAME_INTERVAL_S)))
    context.thread_count = self.threads
    if self.codec == "libx264":
      # zerolatency: no B-frames and no look-ahead, so each frame leaves the encoder at once
      # and a fragment is complete on disk as soon as the next keyframe is encoded.
      stream.options = {"preset": self.x264_preset, "tune": "zerolatency",
                        "crf": str(X264_CRF)}
    else:
      stream.bit_rate = max(100_000, int(MPEG4_BITS_PER_PIXEL * width * height * self.fps))
    self._stream = stream
    self._size = (height, width)

  def write(self, timestamp_s: float, frame: np.ndarray) -> None:
    """Encodes one frame shown at timestamp_s (seconds, any origin)."""
    frame = as_rgb(frame)
    if self._container is None:
      self._open(*frame.shape[:2])
      self.first_s = timestamp_s
    elif frame.shape[:2] != self._size:
      logging.log_first_n(logging.WARNING, "%s: frames of %s resized to the clip's %s.", 1,
                          self.path, frame.shape[:2], self._size)
      height, width = self._size
      frame = np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))
    pad_h = self._stream.height - frame.shape[0]
    pad_w = self._stream.width - frame.shape[1]
    if pad_h or pad_w:
      frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    pts = max(int(round((timestamp_s - self.first_s) / self._time_base)), self._last_pts + 1)
    video_frame.pts = pts
    video_frame.time_base = self._time_base
    for packet in self._stream.encode(video_frame):
      self._container.mux(packet)
    self._last_pts = pts
    self.last_s = timestamp_s
    self.frames += 1

  def close(self) -> bool:
    """Flushes the encoder and finishes the file; False if no frame was written (no file)."""
    if self._container is None:
      return False
    container, self._container = self._container, None
    try:
      for packet in self._stream.encode():
        container.mux(packet)
    finally:
      container.close()
    return True


class _Frame:
  """A frame of the ring: its time, the clean image and the annotation (array or callable)."""

  __slots__ = ("timestamp_s", "clean", "_annotated", "_checked")

  def __init__(self, timestamp_s: float, clean: np.ndarray, annotated: Annotation):
    self.timestamp_s = float(timestamp_s)
    self.clean = clean
    self._annotated = annotated
    self._checked = annotated is None

  def image(self, annotated: bool) -> np.ndarray:
    """The clean frame, or the annotated one (computed here, once, if given as a callable).

    Called in the writer thread only, so the cached result needs no lock.
    """
    if not annotated:
      return self.clean
    if not self._checked:
      self._checked = True
      try:
        value = self._annotated() if callable(self._annotated) else self._annotated
        self._annotated = as_rgb(value)
      except Exception as e:  # pylint: disable=broad-except
        # A drawing bug must not cost the evidence: the clip shows the clean frame instead.
        logging.log_every_n_seconds(logging.WARNING,
                                    "Annotating the frame at %.3f s failed (%r); the clip "
                                    "shows the clean frame.", 60, self.timestamp_s, e)
        self._annotated = None
    return self.clean if self._annotated is None else self._annotated


class _Clip:
  """One event's clip. The caller's side (under the recorder's lock): what frames it takes;
  the writer's side (writer thread only): the file."""

  def __init__(self, event_id: str, folder: str, start_s: float):
    self.event_id = event_id
    self.folder = folder
    self.part_path = os.path.join(folder, CLIP_FILE + PART_SUFFIX)
    self.final_path = os.path.join(folder, CLIP_FILE)
    self.start_s = start_s
    # The last frame time the clip takes: end + post_capture_s once the event has ended.
    self.deadline_s = math.inf
    # The time of the last frame handed to the clip; later frames only are taken.
    self.last_s = -math.inf
    self.dropped = 0
    self.writer: Optional[ClipWriter] = None
    self.failed = False


class EventRecorder:
  """A camera's event evidence: clips and snapshots (see the module doc).

  Call add_frame for every frame, start(event_id, t) when an alarm starts, snapshot(...) then
  and whenever the alarm's peak grows, end(event_id, t) when it ends, and close() at exit.

  Args:
    camera_dir: the camera's folder; events go to `<camera_dir>/events/<event_id>/`.
    fps: the camera's nominal frame rate (the ring's and the queue's lengths follow from it).
    pre_capture_s: seconds of frames before the start that each clip begins with.
    post_capture_s: seconds of frames after the end that each clip goes on with.
    jpeg_quality: of the snapshots (1..100; PIL's scale, 95 and up mostly add bytes).
    codec: the clips' encoder; None: libx264 if PyAV's FFmpeg has it, else mpeg4.
    x264_preset: libx264's preset (see X264_PRESET).
    max_queued_frames: the writer's queue bound; None: QUEUE_S seconds of frames.
    annotated_clip: clips show the annotated frames (True) or the clean ones.
  """

  def __init__(self, camera_dir: str, fps: float, pre_capture_s: float, post_capture_s: float,
               jpeg_quality: int = 90, codec: Optional[str] = None,
               x264_preset: str = X264_PRESET, max_queued_frames: Optional[int] = None,
               annotated_clip: bool = True):
    if not fps > 0:
      raise ValueError(f"fps must be > 0, got {fps}.")
    if pre_capture_s < 0 or post_capture_s < 0:
      raise ValueError(f"pre_capture_s and post_capture_s must be >= 0, got {pre_capture_s} "
                       f"and {post_capture_s}.")
    if not 1 <= jpeg_quality <= 100:
      raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}.")
    if max_queued_frames is not None and max_queued_frames < 1:
      raise ValueError(f"max_queued_frames must be >= 1, got {max_queued_frames}.")
    self.camera_dir = camera_dir
    self.fps = float(fps)
    self.pre_capture_s = float(pre_capture_s)
    self.post_capture_s = float(post_capture_s)
    self.jpeg_quality = jpeg_quality
    self.codec = codec or pick_codec()
    self.x264_preset = x264_preset
    self.annotated_clip = annotated_clip
    self.ring_size = int(math.ceil(self.pre_capture_s * self.fps - _EPS_S)) + 1
    self.max_queued_frames = max_queued_frames or max(1, int(math.ceil(QUEUE_S * self.fps)))
    self._ring: Deque[_Frame] = collections.deque(maxlen=self.ring_size)
    self._lock = threading.Condition()
    # Writer jobs: ("open", clip, pre_frames), ("frame", frame, clips), ("close", clip),
    # ("snapshot", event_id), ("stop",).
    self._jobs: Deque[Tuple[Any, ...]] = collections.deque()
    self._queued_frames = 0
    self._busy = False
    # Started and not yet finished on disk (clip.mp4 renamed, or given up).
    self._clips: Dict[str, _Clip] = {}
    # Started and still taking frames (a subset of _clips).
    self._capturing: Dict[str, _Clip] = {}
    # The latest snapshot of each event not yet written (annotated JPEG, clean frame), and the
    # event whose snapshot the writer is writing.
    self._snapshots: Dict[str, Tuple[bytes, np.ndarray]] = {}
    self._snapshot_busy: Optional[str] = None
    self._stats = collections.Counter()
    self._closed = False
    self._thread = threading.Thread(
        target=self._run, name=f"recorder-{os.path.basename(os.path.normpath(camera_dir))}",
        daemon=True)
    self._thread.start()
    logging.info("Recorder of %s: %s clips, %.1f s before and %.1f s after each event, ring of "
                 "%d frames, queue of %d frames.", camera_dir, self.codec, self.pre_capture_s,
                 self.post_capture_s, self.ring_size, self.max_queued_frames)

  # --- the caller's side -----------------------------------------------------------------------

  def _push(self, job: Tuple[Any, ...]) -> None:
    self._jobs.append(job)
    self._lock.notify_all()

  def _finish_capture(self, clip: _Clip) -> None:
    del self._capturing[clip.event_id]
    self._push(("close", clip))

  def add_frame(self, timestamp_s: float, frame: np.ndarray,
                annotated: Annotation = None) -> None:
    """Takes the camera's next frame; returns at once.

    Args:
      timestamp_s: the frame's time in seconds (not decreasing from frame to frame; the same
        clock as start's and end's).
      frame: the clean frame, uint8 [H, W, 3] RGB (or gray [H, W, 1], [H, W]); kept by
        reference.
      annotated: the annotated frame, a callable returning it (evaluated lazily in the writer
        thread, only if the frame goes into a clip), or None (the clean frame).
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
      # Here, not in the writer thread, where it would cost the whole clip.
      raise ValueError(f"Frames must be uint8 [H, W, 3|1] or [H, W], got {frame.dtype} "
                       f"{frame.shape}.")
    with self._lock:
      if self._closed:
        return
      entry = _Frame(timestamp_s, frame, annotated)
      self._ring.append(entry)
      targets: List[_Clip] = []
      for clip in list(self._capturing.values()):
        if entry.timestamp_s > clip.deadline_s + _EPS_S:
          self._finish_capture(clip)
        elif entry.timestamp_s > clip.last_s:
          clip.last_s = entry.timestamp_s
          targets.append(clip)
      if not targets:
        return
      if self._queued_frames >= self.max_queued_frames:
        self._stats["frames_dropped"] += len(targets)
        for clip in targets:
          if not clip.dropped:
            logging.warning("Event %s: the clip writer is %d frames behind; frames are dropped "
                            "from the clip (counted at its end).", clip.event_id,
                            self._queued_frames)
          clip.dropped += 1
      else:
        self._queued_frames += 1
        self._push(("frame", entry, targets))
      for clip in targets:
        if entry.timestamp_s >= clip.deadline_s - _EPS_S:
          self._finish_capture(clip)

  def start(self, event_id: str, timestamp_s: float) -> None:
    """Opens the clip of a new event: the ring's frames from timestamp_s - pre_capture_s on,
    then every frame added until post_capture_s after end(event_id, ...)."""
    folder = event_dir(self.camera_dir, event_id)
    with self._lock:
      if self._closed:
        logging.warning("Event %s started after the recorder was closed: not recorded.",
                        event_id)
        return
      if event_id in self._clips:
        logging.warning("Event %s started twice; the second start is ignored.", event_id)
        return
      cutoff = timestamp_s - self.pre_capture_s - _EPS_S
      pre = [entry for entry in self._ring if entry.timestamp_s >= cutoff]
      clip = _Clip(event_id, folder, float(timestamp_s))
      if pre:
        clip.last_s = max(entry.timestamp_s for entry in pre)
      self._clips[event_id] = clip
      self._capturing[event_id] = clip
      self._push(("open", clip, pre))

  def end(self, event_id: str, timestamp_s: float) -> None:
    """Ends an event: its clip takes the frames up to timestamp_s + post_capture_s, then is
    finished (by the first later frame, or at once if there is no post-capture left)."""
    with self._lock:
      clip = self._capturing.get(event_id)
      if clip is None:
        logging.warning("Event %s ended but is not recording (never started, or finished).",
                        event_id)
        return
      clip.deadline_s = float(timestamp_s) + self.post_capture_s
      if clip.last_s >= clip.deadline_s - _EPS_S:
        self._finish_capture(clip)

  def cut_post_capture(self) -> None:
    """Finishes at once the clips of ended events still in their post-capture (the stream
    stopped: no later frame will finish them)."""
    with self._lock:
      for clip in list(self._capturing.values()):
        if clip.deadline_s < math.inf:
          self._finish_capture(clip)

  def snapshot(self, event_id: str, clean_frame: np.ndarray,
               annotated_frame: np.ndarray) -> bytes:
    """Replaces the event's snapshot.jpg (annotated) and snapshot-clean.jpg.

    The annotated JPEG is encoded here (a few ms at 640x360) and returned, for MQTT; the clean
    one is encoded, and both files written, by the writer thread. Of several snapshots of an
    event that wait for the writer, only the latest is written.

    Returns:
      The JPEG bytes of annotated_frame.
    """
    check_event_id(event_id)
    jpeg = encode_jpeg(annotated_frame, self.jpeg_quality)
    with self._lock:
      if self._closed:
        logging.warning("Snapshot of event %s after the recorder was closed: not written.",
                        event_id)
        return jpeg
      waiting = event_id in self._snapshots
      self._snapshots[event_id] = (jpeg, clean_frame)
      if not waiting:
        self._push(("snapshot", event_id))
    return jpeg

  def open_event_ids(self) -> Set[str]:
    """Events whose folder is still being written: started and not finished on disk, or with
    a snapshot not yet written. Retention must not touch these folders."""
    with self._lock:
      ids = set(self._clips) | set(self._snapshots)
      if self._snapshot_busy is not None:
        ids.add(self._snapshot_busy)
      return ids

  def wait_idle(self, timeout_s: Optional[float] = None) -> bool:
    """Waits until the writer has done every job handed to it so far; True if it has."""
    with self._lock:
      return self._lock.wait_for(lambda: not self._jobs and not self._busy, timeout_s)

  def stats(self) -> Dict[str, int]:
    """Counters: frames_encoded, frames_dropped (queue full), clips_finished, clips_failed,
    snapshots_written, snapshots_failed; and now: queued_frames, open_events."""
    with self._lock:
      stats = {key: self._stats[key] for key in (
          "frames_encoded", "frames_dropped", "clips_finished", "clips_failed",
          "snapshots_written", "snapshots_failed")}
      stats["queued_frames"] = self._queued_frames
      stats["open_events"] = len(self._clips)
      return stats

  def close(self, timeout_s: Optional[float] = None) -> bool:
    """Finishes every clip (an open event's clip ends at the last frame added; a post-capture
    is cut short), writes the pending snapshots and waits for the writer thread (at most
    timeout_s; None: as long as it takes). True if the writer finished."""
    with self._lock:
      if not self._closed:
        self._closed = True
        for clip in list(self._capturing.values()):
          self._finish_capture(clip)
        self._push(("stop",))
    self._thread.join(timeout_s)
    finished = not self._thread.is_alive()
    stats = self.stats()
    log = logging.warning if stats["frames_dropped"] or stats["clips_failed"] or (
        not finished) else logging.info
    log("Recorder of %s closed%s: %d clips finished, %d failed, %d frames encoded, %d dropped, "
        "%d snapshots written.", self.camera_dir, "" if finished else " (writer still busy)",
        stats["clips_finished"], stats["clips_failed"], stats["frames_encoded"],
        stats["frames_dropped"], stats["snapshots_written"])
    return finished

  def __enter__(self) -> "EventRecorder":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  # --- the writer thread -----------------------------------------------------------------------

  def _run(self) -> None:
    while True:
      snapshot = None
      with self._lock:
        self._lock.wait_for(lambda: self._jobs)
        job = self._jobs.popleft()
        if job[0] == "frame":
          self._queued_frames -= 1
        elif job[0] == "snapshot":
          snapshot = self._snapshots.pop(job[1])
          self._snapshot_busy = job[1]
        self._busy = True
      try:
        if job[0] == "stop":
          return
        if job[0] == "open":
          self._open_clip(job[1], job[2])
        elif job[0] == "frame":
          for clip in job[2]:
            self._write(clip, job[1])
        elif job[0] == "close":
          self._close_clip(job[1])
        elif job[0] == "snapshot":
          self._write_snapshot(job[1], *snapshot)
      except Exception:  # pylint: disable=broad-except
        # The writer must outlive any one job: the next events still need their evidence.
        logging.exception("Recorder of %s: %s job failed.", self.camera_dir, job[0])
      finally:
        with self._lock:
          self._busy = False
          self._snapshot_busy = None
          self._lock.notify_all()

  def _open_clip(self, clip: _Clip, pre: List[_Frame]) -> None:
    try:
      os.makedirs(clip.folder, exist_ok=True)
    except OSError as e:
      self._fail(clip, e)
      return
    clip.writer = ClipWriter(clip.part_path, self.fps, self.codec, self.x264_preset)
    for entry in pre:
      self._write(clip, entry)

  def _write(self, clip: _Clip, entry: _Frame) -> None:
    if clip.failed or clip.writer is None:
      return
    try:
      clip.writer.write(entry.timestamp_s, entry.image(self.annotated_clip))
    except Exception as e:  # pylint: disable=broad-except
      self._fail(clip, e)
      return
    with self._lock:
      self._stats["frames_encoded"] += 1

  def _fail(self, clip: _Clip, error: Exception) -> None:
    """Gives a clip up (a full disk, an encoder error): what is on disk stays as .part."""
    logging.error("Event %s: writing %s failed (%r); the clip is given up, what was written "
                  "stays in %s.", clip.event_id, clip.part_path, error, clip.part_path)
    clip.failed = True
    if clip.writer is not None:
      try:
        clip.writer.close()
      except Exception:  # pylint: disable=broad-except
        pass

  def _close_clip(self, clip: _Clip) -> None:
    try:
      if clip.failed:
        outcome = "clips_failed"
      elif clip.writer is None or not clip.writer.close():
        outcome = "clips_failed"
        logging.warning("Event %s: no frame reached its clip; no clip.mp4.", clip.event_id)
      else:
        with open(clip.part_path, "rb") as f:
          os.fsync(f.fileno())
        os.replace(clip.part_path, clip.final_path)
        _fsync_dir(clip.folder)
        outcome = "clips_finished"
        writer = clip.writer
        log = logging.warning if clip.dropped else logging.info
        log("Event %s: %s of %d frames (%.2f s to %.2f s), %d frames dropped (writer behind).",
            clip.event_id, clip.final_path, writer.frames, writer.first_s, writer.last_s,
            clip.dropped)
    except Exception as e:  # pylint: disable=broad-except
      self._fail(clip, e)
      outcome = "clips_failed"
    with self._lock:
      self._stats[outcome] += 1
      del self._clips[clip.event_id]

  def _write_snapshot(self, event_id: str, jpeg: bytes, clean_frame: np.ndarray) -> None:
    folder = event_dir(self.camera_dir, event_id)
    try:
      clean_jpeg = encode_jpeg(clean_frame, self.jpeg_quality)
      os.makedirs(folder, exist_ok=True)
      write_atomic(os.path.join(folder, CLEAN_SNAPSHOT_FILE), clean_jpeg)
      write_atomic(os.path.join(folder, SNAPSHOT_FILE), jpeg)
    except Exception as e:  # pylint: disable=broad-except
      logging.error("Event %s: writing its snapshot failed: %r.", event_id, e)
      outcome = "snapshots_failed"
    else:
      outcome = "snapshots_written"
    with self._lock:
      self._stats[outcome] += 1
