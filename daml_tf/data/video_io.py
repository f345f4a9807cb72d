"""Frames in and out of the streaming detector: video files and frame folders (PyAV, PIL).

`iter_frames` reads a video file (.avi, .mp4, .mkv, ... through PyAV/FFmpeg) or a folder of
frame images (natural order, as the frames layout) and yields uint8 frames one at a time, so a
long recording never sits in memory. `VideoWriter` encodes RGB frames into a video file.

A video that stops decoding part-way (a truncated recording, a corrupt packet, a file whose
header promises more frames than it holds) is not an error for the frames already read: the
generator yields every frame it could decode, logs a warning naming the frame index where
decoding stopped and then raises `DecodeStopped(index)`. A caller that wants the partial result
catches it after consuming the frames (see `inference.detection.run_detection`); a caller that does not
gets an `errors.DataError` with a clear message.
"""

import os
import tempfile
from typing import Iterator, Optional, Tuple

from absl import logging
import numpy as np
from PIL import Image
import tensorflow as tf

from daml_tf import fileio
from daml_tf import errors
from daml_tf.data import layout
from daml_tf.data import registry

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
DEFAULT_FPS = 25.0

# Output formats in order of preference: (encoder, container extension).
_OUTPUT_FORMATS = (("libx264", ".mp4"), ("mpeg4", ".avi"), ("mjpeg", ".avi"))


class DecodeStopped(errors.InputStopped):
  """Decoding stopped before the end of the input; every earlier frame was yielded.

  Attributes:
    index: 0-based index of the first frame that could not be decoded, which is also the
      number of frames yielded before the exception.
    path: the input.
    reason: what went wrong, for messages.
  """

  def _message(self) -> str:
    return (f"Decoding {self.path!r} stopped at frame {self.index} (0-based; the {self.index} "
            f"frames before it were read): {self.reason}")


def _is_remote(path: str) -> bool:
  return "://" in path


def _open_input(path: str):
  """What PyAV and PIL open: the local path, or a tf.io.gfile file for s3://, gs://, ...

  FFmpeg cannot read TensorFlow's filesystems itself; both libraries accept a seekable Python
  file object instead.
  """
  return fileio.GFile(path, "rb") if _is_remote(path) else path


def list_frame_files(folder: str):
  """Image files of a frames folder in natural order ("2" before "10")."""
  names = [n.rstrip("/") for n in fileio.listdir(folder)
           if n.lower().endswith(registry.IMAGE_EXTENSIONS)]
  return [os.path.join(folder, n) for n in sorted(names, key=layout.natural_key)]


def video_fps(path: str, default: float = DEFAULT_FPS) -> float:
  """Frame rate of a video file (its average or guessed rate), or `default`.

  Args:
    path: a video file or a frames folder (which has no rate of its own).
    default: returned for folders and for files that do not state a usable rate.
  """
  if fileio.isdir(path):
    return default
  import av  # pylint: disable=g-import-not-at-top
  try:
    with av.open(_open_input(path)) as container:
      if not container.streams.video:
        return default
      stream = container.streams.video[0]
      rate = stream.average_rate or stream.guessed_rate or stream.base_rate
  except (av.error.FFmpegError, OSError):
    return default
  rate = float(rate) if rate else 0.0
  return rate if 0 < rate < 1000 else default


def _image_to_array(image: Image.Image) -> np.ndarray:
  """uint8 HxWx1 (gray) or HxWx3 (anything with colour) from any PIL image mode."""
  if image.mode.startswith("I;16") or image.mode == "I":
    # 16-bit gray is scaled to 8 bits, as tf.io.decode_image(dtype=float32) scales it to [0, 1].
    wide = np.asarray(image, np.float64)
    return np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8)[..., None]
  if image.mode in ("1", "L", "LA"):
    return np.asarray(image.convert("L"), np.uint8)[..., None]
  return np.asarray(image.convert("RGB"), np.uint8)


def read_image(path: str) -> np.ndarray:
  """One image file (local or remote) as uint8 [H, W, 1|3] at its own size, as frame folders
  are read; PIL's errors (OSError, ValueError, SyntaxError) pass through."""
  with Image.open(_open_input(path)) as image:
    return _image_to_array(image)


def _iter_folder(folder: str, fps: float) -> Iterator[Tuple[int, float, np.ndarray]]:
  paths = list_frame_files(folder)
  if not paths:
    raise errors.DataError(
        f"Folder {folder!r} holds no frames with an extension in "
        f"{', '.join(registry.IMAGE_EXTENSIONS)}.")
  for index, path in enumerate(paths):
    try:
      with Image.open(_open_input(path)) as image:
        frame = _image_to_array(image)
    except (OSError, ValueError, SyntaxError) as e:
      # PIL raises OSError for truncated files and SyntaxError for some corrupt headers.
      logging.warning("Cannot read frame %d (%s): %s; stopping here.", index, path, e)
      raise DecodeStopped(index, folder, f"cannot read {path!r}: {e}") from e
    yield index, index / fps, frame


class CannotOpen(DecodeStopped):
  """The input could not be opened at all (index 0: no frame was read)."""


def iter_video(path: str, fps: float = DEFAULT_FPS, check_length: bool = True,
               threads: bool = False) -> Iterator[Tuple[int, float, np.ndarray]]:
  """Yields (index, timestamp_s, RGB uint8 [H, W, 3] frame) of a video file, decoded by PyAV.

  Args:
    path: any container FFmpeg reads (local or a tf.io.gfile path).
    fps: the frame rate assumed when the file declares none.
    check_length: raise DecodeStopped when the file ends before the frame count its header
      declares (a truncated recording).
    threads: let FFmpeg decode on several threads (frames still come out in order).

  Raises:
    CannotOpen: the file cannot be opened.
    DecodeStopped: decoding failed part-way; every earlier frame was yielded.
    DataError: the file has no video stream.
  """
  import av  # pylint: disable=g-import-not-at-top
  try:
    container = av.open(_open_input(path))
  except (av.error.FFmpegError, OSError) as e:
    # A file cut before its first frame (or not a video at all): nothing can be read.
    logging.warning("Cannot open video %s: %s", path, e)
    raise CannotOpen(0, path, f"cannot open the file: {e}") from e
  index = 0
  with container:
    if not container.streams.video:
      raise errors.DataError(f"File {path!r} has no video stream.")
    stream = container.streams.video[0]
    if threads:
      stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else fps
    frames = container.decode(stream)
    while True:
      try:
        frame = next(frames)
      except StopIteration:
        break
      except av.error.FFmpegError as e:
        logging.warning("Decoding %s stopped at frame %d: %s", path, index, e)
        raise DecodeStopped(index, path, str(e)) from e
      timestamp = frame.time if frame.time is not None else index / fps
      yield index, float(timestamp), frame.to_ndarray(format="rgb24")
      index += 1
    # A file cut in the middle can demux to its end without an error, only shorter than its
    # header says; that is a truncated recording too, so the caller hears about it.
    declared = int(stream.frames or 0)
    if check_length and declared > index:
      logging.warning("Video %s ended at frame %d but its header declares %d frames; it is "
                      "probably truncated.", path, index, declared)
      raise DecodeStopped(index, path,
                          f"the file ends after {index} of the {declared} frames its header "
                          "declares (truncated?)")


def iter_frames(path: str, fps: float = DEFAULT_FPS) -> Iterator[Tuple[int, float, np.ndarray]]:
  """Yields the frames of a video file or a frames folder, one at a time.

  Args:
    path: a video file (any container FFmpeg reads; see VIDEO_EXTENSIONS) or a folder of
      frame images, read in natural order.
    fps: frame rate used for timestamps of a frames folder, and of video frames without a
      presentation time.

  Yields:
    (index, timestamp_s, frame): 0-based index, time in seconds, and the frame as uint8
    [H, W, 3] (video files and colour images) or [H, W, 1] (gray images).

  Raises:
    FileNotFoundError: `path` does not exist.
    DecodeStopped: after yielding every frame before it, when a frame cannot be decoded or
      the file ends before the frame count its header declares.
    errors.DataError: a folder without frames, or a file without a video stream.
  """
  if not fileio.exists(path):
    raise FileNotFoundError(
        f"Input {path!r} does not exist: give a video file ({', '.join(VIDEO_EXTENSIONS)}) or "
        "a folder of frames.")
  if fileio.isdir(path):
    return _iter_folder(path, fps)
  return iter_video(path, fps)


def pick_output_format() -> Tuple[str, str]:
  """(encoder, file extension) of the best video encoder this FFmpeg build has.

  libx264 in .mp4 if available, else MPEG-4 part 2 in .avi, else Motion JPEG in .avi.
  """
  import av  # pylint: disable=g-import-not-at-top
  for codec, extension in _OUTPUT_FORMATS:
    if codec in av.codecs_available and _has_encoder(codec):
      return codec, extension
  raise RuntimeError("This FFmpeg build has none of the encoders libx264, mpeg4, mjpeg.")


def _has_encoder(codec: str) -> bool:
  import av  # pylint: disable=g-import-not-at-top
  try:
    av.codec.Codec(codec, "w")
  except (av.error.FFmpegError, ValueError):
    return False
  return True


class VideoWriter:
  """Encodes uint8 RGB (or gray) frames into a video file with PyAV.

  The frame size is taken from the first frame; odd sizes are padded by one edge pixel because
  the 4:2:0 formats every encoder here uses need even dimensions.

  Args:
    path: output file; its extension chooses the container.
    fps: frame rate.
    codec: FFmpeg encoder name; None picks libx264 for .mp4/.mkv/.mov when available, else
      mpeg4, and mjpeg as the last resort.
    fit_size: a frame of another size than the first is resized to it (bilinear; logged once)
      instead of refused: a live camera may come back from an outage at another resolution.

  Example:
    with VideoWriter("out.avi", fps=25) as writer:
      for frame in frames:
        writer.write(frame)
  """

  def __init__(self, path: str, fps: float = DEFAULT_FPS, codec: Optional[str] = None,
               fit_size: bool = False):
    import av  # pylint: disable=g-import-not-at-top
    self._av = av
    self.path = path
    self.fps = fps
    self.fit_size = fit_size
    self._size: Optional[Tuple[int, int]] = None
    self.codec = codec or self._default_codec(path)
    self._container = None
    self._stream = None
    self.frames_written = 0

  def _default_codec(self, path: str) -> str:
    preferred = ("libx264", "mpeg4", "mjpeg") if not path.lower().endswith(".avi") else (
        "mpeg4", "mjpeg")
    for codec in preferred:
      if codec in self._av.codecs_available and _has_encoder(codec):
        return codec
    raise RuntimeError(f"No usable video encoder for {path!r} (tried {', '.join(preferred)}).")

  def _open(self, height: int, width: int) -> None:
    from fractions import Fraction  # pylint: disable=g-import-not-at-top
    directory = os.path.dirname(self.path)
    if directory:
      fileio.makedirs(directory)
    if _is_remote(self.path):
      # FFmpeg's muxers seek back to patch headers, which object stores cannot do: encode to
      # a local file and copy it over on close.
      handle, self._local_path = tempfile.mkstemp(suffix=os.path.splitext(self.path)[1])
      os.close(handle)
    else:
      self._local_path = self.path
    self._container = self._av.open(self._local_path, "w")
    rate = Fraction(self.fps).limit_denominator(1001)
    stream = self._container.add_stream(self.codec, rate=rate)
    stream.width = width + width % 2
    stream.height = height + height % 2
    # mjpeg wants the full-range variant of 4:2:0.
    stream.pix_fmt = "yuvj420p" if self.codec == "mjpeg" else "yuv420p"
    if self.codec == "libx264":
      stream.options = {"crf": "18"}
    else:
      # FFmpeg's default of 200 kb/s smears the overlay text at any resolution.
      stream.bit_rate = 8_000_000
    self._stream = stream

  def write(self, frame: np.ndarray) -> None:
    """Appends one uint8 frame, [H, W, 3], [H, W, 1] or [H, W]."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
      raise ValueError(f"VideoWriter takes uint8 frames, got {frame.dtype}.")
    if frame.ndim == 2:
      frame = frame[..., None]
    if frame.shape[-1] == 1:
      frame = np.repeat(frame, 3, axis=-1)
    if self._container is None:
      self._size = frame.shape[:2]
      self._open(frame.shape[0], frame.shape[1])
    elif self.fit_size and frame.shape[:2] != self._size:
      frame = self._fit(frame)
    pad_h = self._stream.height - frame.shape[0]
    pad_w = self._stream.width - frame.shape[1]
    if pad_h < 0 or pad_w < 0 or pad_h > 1 or pad_w > 1:
      raise ValueError(f"Frame {frame.shape[:2]} differs from the video's first frame "
                       f"({self._stream.height}x{self._stream.width}).")
    if pad_h or pad_w:
      frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    video_frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    for packet in self._stream.encode(video_frame):
      self._container.mux(packet)
    self.frames_written += 1

  def _fit(self, frame: np.ndarray) -> np.ndarray:
    logging.log_first_n(logging.WARNING, "%s: frames of %s resized to the video's %s.", 1,
                        self.path, frame.shape[:2], self._size)
    height, width = self._size
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))

  def close(self) -> None:
    """Flushes the encoder and closes the file (a no-op if no frame was written)."""
    if self._container is None:
      return
    for packet in self._stream.encode():
      self._container.mux(packet)
    self._container.close()
    self._container = None
    if self._local_path != self.path:
      fileio.copy(self._local_path, self.path, overwrite=True)
      os.remove(self._local_path)

  def __enter__(self) -> "VideoWriter":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
