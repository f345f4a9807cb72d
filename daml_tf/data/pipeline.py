"""The TensorFlow input pipeline: frame decoding, background, clips.

Frames are float32 in [0, 1] at model resolution everywhere (decoded, cached, background); the
model sees `frame - background`. A clip is k input frames `j, j+interval, ..., j+(k-1)*interval`
followed by its target frame `j+(k-1)*interval+delta`; clips never cross videos.

tf.data reports an undecodable image as a bare InvalidArgumentError without the file name, so
every pass that decodes frames here re-decodes the suspects one by one on failure and raises a
DataError naming the file.
"""

import dataclasses
import io
import os
import re
import time
from typing import Iterable, Iterator, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from daml_tf import fileio
from daml_tf.data import registry
from daml_tf.data import tiff
from daml_tf.data.layout import Video, check_clip_length
from daml_tf.errors import DataError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ZEROS_25 = b"\0" * 25
AUTOTUNE = tf.data.AUTOTUNE
# Byte alignment TensorFlow requires of a buffer it adopts through DLPack (Eigen's maximum).
_TF_ALIGNMENT = 64


# ------------------------------------------------------------------------------------------------
# Decoding.


def _decode_tiff(contents: tf.Tensor) -> tf.Tensor:
  # TensorFlow has no TIFF decoder; Pillow decodes on the host (tf.data runs it in parallel).
  image = tf.numpy_function(tiff.to_rgba, [contents], tf.uint8, stateful=False)
  image.set_shape([None, None, 4])
  return tf.image.convert_image_dtype(image, tf.float32)


def _decode_other(contents: tf.Tensor) -> tf.Tensor:
  def jpeg():
    # The accurate integer IDCT (TensorFlow's default is the fast one) is what PIL and OpenCV
    # use, so frames match the reference implementations' to the level.
    image = tf.io.decode_jpeg(contents, channels=0, dct_method="INTEGER_ACCURATE")
    return tf.image.convert_image_dtype(image, tf.float32)

  def png16():
    return tf.image.convert_image_dtype(tf.io.decode_png(contents, channels=0, dtype=tf.uint16),
                                        tf.float32)

  def other():
    # Decoded to uint8 and scaled like JPEG and TIFF frames: decode_image's own float
    # conversion differs from convert_image_dtype in the last bit for some levels, and 8-bit
    # frames stored as TFRecords must convert back to exactly these values.
    image = tf.io.decode_image(contents, channels=0, expand_animations=False)
    return tf.image.convert_image_dtype(image, tf.float32)

  # Byte 24 of a PNG is the bit depth (IHDR); the padding keeps short files readable.
  header = tf.strings.join([tf.strings.substr(contents, 0, 25), _ZEROS_25])
  is_png16 = tf.logical_and(tf.equal(tf.strings.substr(header, 0, 8), _PNG_SIGNATURE),
                            tf.equal(tf.strings.substr(header, 24, 1), b"\x10"))
  return tf.case([(tf.io.is_jpeg(contents), jpeg), (is_png16, png16)], default=other,
                 exclusive=True)


def to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
  """Drops alpha and converts to gray or RGB; the decoded channel count is only known at run.

  Works on one image [H, W, C] or a batch [..., H, W, C]; the serving export uses it too, so
  camera frames are converted exactly as training frames.
  """
  n = tf.shape(image)[-1]
  # 2 = gray + alpha, 4 = RGBA; alpha carries no appearance. The dynamic slice also hides the
  # static channel count from both cond branches, so each traces for any C.
  image = image[..., :tf.where(n % 2 == 0, n - 1, n)]
  n = tf.shape(image)[-1]
  if channels == 1:
    image = tf.cond(n == 3, lambda: tf.image.rgb_to_grayscale(image), lambda: image)
  else:
    image = tf.cond(n == 1, lambda: tf.image.grayscale_to_rgb(image), lambda: image)
  return tf.ensure_shape(image, [None] * (image.shape.rank - 1) + [channels])


def _decode(path: tf.Tensor, image_size: Tuple[int, int], channels: int,
            allow_tiff: bool = True, native: bool = True) -> tf.Tensor:
  contents = fileio.read_file_op(path, native)
  if allow_tiff:
    is_tiff = tf.strings.regex_full_match(tf.strings.lower(path), r".*\.tiff?")
    image = tf.cond(is_tiff, lambda: _decode_tiff(contents), lambda: _decode_other(contents))
  else:
    image = _decode_other(contents)
  image = to_channels(image, channels)
  image = tf.image.resize(image, image_size, method=tf.image.ResizeMethod.BILINEAR)
  image.set_shape([image_size[0], image_size[1], channels])
  return image


def decode_frame(path: tf.Tensor, image_size: Tuple[int, int], channels: int) -> tf.Tensor:
  """Reads and decodes one frame; works eagerly and inside tf.data / tf.function.

  The format is chosen in-graph: TIFF by the file extension (Pillow, on the host), JPEG
  by its signature (tf.io.decode_jpeg with the accurate IDCT, as PIL and OpenCV decode), the
  rest (PNG, BMP, GIF) by tf.io.decode_image. Every 8-bit image is scaled to [0, 1] the same
  way (tf.image.convert_image_dtype), 16-bit PNGs by their own maximum. Alpha channels are
  dropped.

  Args:
    path: scalar string tensor, the image file.
    image_size: (height, width) to resize to, bilinearly.
    channels: 1 (converted with tf.image.rgb_to_grayscale) or 3 (gray is replicated).

  Returns:
    float32 [height, width, channels] in [0, 1].
  """
  native = True
  if isinstance(path, (str, bytes)) or tf.executing_eagerly():
    name = path if isinstance(path, (str, bytes)) else path.numpy()
    native = fileio.is_tf_native(name.decode() if isinstance(name, bytes) else name)
  return _decode(path, tuple(image_size), channels, allow_tiff=True, native=native)


def _needs_tiff(paths: Sequence[str]) -> bool:
  return any(p.lower().endswith(registry.TIFF_EXTENSIONS) for p in paths)


def _decoder(paths: Sequence[str], image_size, channels):
  # Leaves the TIFF branch (a host call) out of the graph when no path needs it.
  allow_tiff = _needs_tiff(paths)
  # TensorFlow's own reader where it serves every path, so local runs keep it in their graphs.
  native = all(fileio.is_tf_native(p) for p in paths)
  image_size = tuple(image_size)
  return lambda path: _decode(path, image_size, channels, allow_tiff, native)


def _locate_decode_error(paths: Sequence[str], start: int, image_size, channels,
                         error: Exception) -> None:
  """Raises DataError naming the first undecodable file, searching from `start` first."""
  decode = _decoder(paths, image_size, channels)
  order = list(range(start, len(paths))) + list(range(min(start, len(paths))))
  for i in order:
    try:
      decode(tf.constant(paths[i]))
    except (tf.errors.OpError, ValueError) as e:
      message = getattr(e, "message", str(e)).strip().splitlines()[0]
      # Keep TensorFlow's reason, drop its kernel and op decorations.
      message = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*$", "", message)
      raise DataError(f"Cannot decode frame {paths[i]!r}: {message}") from error
  # Every file decodes on its own: the failure was not a bad image.
  raise error


def iterate_frames(paths: Sequence[str], image_size: Tuple[int, int], channels: int,
                   batch_size: int = 64) -> Iterator[np.ndarray]:
  """Decodes frames in parallel with tf.data, streamed.

  Args:
    paths: image files.
    image_size: (height, width).
    channels: 1 or 3.
    batch_size: frames per yielded batch (memory granularity only).

  Yields:
    float32 [<=batch_size, height, width, channels] batches in [0, 1], in the order of paths.

  Raises:
    DataError: naming a file that cannot be read or decoded.
  """
  paths = list(paths)
  dataset = (tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
             # Ordered, so a failure points at the region of the file that caused it.
             .map(_decoder(paths, image_size, channels), num_parallel_calls=AUTOTUNE,
                  deterministic=True)
             .batch(batch_size)
             .prefetch(AUTOTUNE))
  done = 0
  iterator = iter(dataset)
  while True:
    try:
      batch = next(iterator)
    except StopIteration:
      return
    except tf.errors.OpError as e:
      _locate_decode_error(paths, done, image_size, channels, e)
    batch = batch.numpy()
    done += len(batch)
    yield batch


def _aligned_empty(shape) -> np.ndarray:
  """An uninitialised float32 array whose data TensorFlow can adopt without copying."""
  size = int(np.prod(shape)) * 4
  buffer = np.empty(size + _TF_ALIGNMENT, np.uint8)
  offset = -buffer.ctypes.data % _TF_ALIGNMENT
  return buffer[offset:offset + size].view(np.float32).reshape(shape)


def decode_frames(frame_paths: Sequence[str], image_size: Tuple[int, int], channels: int,
                  batch_size: int = 64) -> np.ndarray:
  """Decodes frames in parallel with tf.data.

  Args:
    frame_paths: image files.
    image_size: (height, width).
    channels: 1 or 3.
    batch_size: frames decoded per step (memory granularity only).

  Returns:
    float32 [N, height, width, channels] in [0, 1], in the order of frame_paths.

  Raises:
    DataError: naming a file that cannot be read or decoded.
  """
  frames = _aligned_empty((len(frame_paths), image_size[0], image_size[1], channels))
  done = 0
  # Filled in place: concatenating batches would briefly hold everything twice.
  for batch in iterate_frames(frame_paths, image_size, channels, batch_size):
    frames[done:done + len(batch)] = batch
    done += len(batch)
  return frames


def _frame_cache(paths: Sequence[str], image_size, channels, background: np.ndarray) -> tf.Tensor:
  """All frames, background subtracted, as one float32 [N, H, W, C] tensor in host memory."""
  start = time.time()
  frames = decode_frames(paths, image_size, channels)
  frames -= background
  if frames.ctypes.data % _TF_ALIGNMENT == 0:
    # Zero-copy: the tensor adopts the NumPy buffer (tf.constant would copy it, doubling the
    # peak memory of the largest allocation of a run).
    cache = tf.experimental.dlpack.from_dlpack(frames.__dlpack__())
  else:
    with tf.device("/cpu:0"):
      cache = tf.constant(frames)
  logging.info("Frame cache: %d frames (%.0f MB) decoded in %.1f s.", len(frames),
               frames.nbytes / 2**20, time.time() - start)
  return cache


# ------------------------------------------------------------------------------------------------
# Background.


def compute_background(frame_paths: Sequence[str], image_size: Tuple[int, int], channels: int,
                       batch_size: int = 64) -> np.ndarray:
  """Per-pixel mean of frames, streamed: never holds more than a few batches.

  Args:
    frame_paths: every frame to average (normally all training frames).
    image_size: (height, width) of the model.
    channels: 1 or 3.
    batch_size: frames decoded per step.

  Returns:
    float32 [height, width, channels].

  Raises:
    DataError: no frames, or naming a file that cannot be decoded.
  """
  if not frame_paths:
    raise DataError("Cannot compute a background from zero frames.")
  return mean_frame(iterate_frames(frame_paths, image_size, channels, batch_size))


def mean_frame(batches: Iterable[np.ndarray]) -> np.ndarray:
  """Per-pixel mean of a stream of float32 [n, H, W, C] frame batches, as float32 [H, W, C].

  The result depends on how the frames are batched (float64 sums are not associative), so
  whoever must reproduce `compute_background` bit for bit feeds it iterate_frames' batches of
  the same paths and batch size.
  """
  total = None
  count = 0
  for batch in batches:
    if total is None:
      total = np.zeros(batch.shape[1:], np.float64)
    # float64 on the host: a float32 running sum over 10^5 frames loses digits.
    total += batch.sum(axis=0, dtype=np.float64)
    count += len(batch)
  if not count:
    raise DataError("Cannot compute a background from zero frames.")
  return (total / count).astype(np.float32)


def load_or_compute_background(path: str, videos: Sequence[Video],
                               image_size: Tuple[int, int], channels: int) -> np.ndarray:
  """Reads the .npy file `path`, or computes the background from `videos` and writes it there.

  Args:
    path: the run's background file (daml_tf.run_dir.background_path).
    videos: the training videos; every frame is averaged.
    image_size: (height, width) of the model.
    channels: 1 or 3.

  Returns:
    float32 [height, width, channels].
  """
  fileio.ensure_filesystem(path)
  shape = (image_size[0], image_size[1], channels)
  if fileio.exists(path):
    with fileio.GFile(path, "rb") as f:
      background = np.load(io.BytesIO(f.read()))
    if background.shape == shape:
      logging.info("Background read from %s.", path)
      return background.astype(np.float32)
    logging.warning("Background %s has shape %s, expected %s; recomputing it.", path,
                    background.shape, shape)
  paths = [p for v in videos for p in v.frame_paths]
  start = time.time()
  background = compute_background(paths, image_size, channels)
  logging.info("Background of %d frames computed in %.1f s; writing %s.", len(paths),
               time.time() - start, path)
  fileio.makedirs(os.path.dirname(path))
  buffer = io.BytesIO()
  np.save(buffer, background)
  with fileio.GFile(path, "wb") as f:
    f.write(buffer.getvalue())
  return background


def check_background(background: np.ndarray, image_size, channels) -> np.ndarray:
  """The background as float32; raises ValueError unless it is [height, width, channels]."""
  shape = (image_size[0], image_size[1], channels)
  background = np.asarray(background, np.float32)
  if background.shape != shape:
    raise ValueError(f"Background has shape {background.shape}, expected {shape}.")
  return background


def load_video(video: Video, image_size: Tuple[int, int], channels: int,
               background: np.ndarray, transform=None) -> np.ndarray:
  """All frames of one video, background subtracted (for evaluation).

  Args:
    video: the video.
    image_size: (height, width) of the model.
    channels: 1 or 3.
    background: float32 [height, width, channels].
    transform: optional function of float32 [N, H, W, C] frames in [0, 1] applied before the
      background is subtracted (a test-time perturbation).

  Returns:
    float32 [num_frames, height, width, channels]: frame - background.

  Raises:
    DataError: naming a frame that cannot be decoded.
  """
  background = check_background(background, image_size, channels)
  frames = decode_frames(video.frame_paths, image_size, channels)
  if transform is not None:
    # A copy: arrays viewed from tensors are read-only.
    frames = np.array(transform(frames), np.float32)
  frames -= background
  return frames


# ------------------------------------------------------------------------------------------------
# Clips.


def clip_indices(num_frames: int, time_steps: int, interval: int, delta: int) -> np.ndarray:
  """Frame indices of every clip of a video.

  Args:
    num_frames: frames in the video.
    time_steps: k, input frames per clip.
    interval: frames between consecutive inputs.
    delta: frames between the last input and the target.

  Returns:
    int64 [N, k+1], N = max(num_frames - clip_span, 0), clip_span = (k-1)*interval + delta.
    Row j is j, j+interval, ..., j+(k-1)*interval, j+(k-1)*interval+delta.
  """
  if time_steps < 1 or interval < 1 or delta < 1:
    raise ValueError(f"time_steps, interval and delta must be >= 1, got {time_steps}, "
                     f"{interval}, {delta}.")
  offsets = np.arange(time_steps, dtype=np.int64) * interval
  offsets = np.append(offsets, offsets[-1] + delta)
  num_clips = max(num_frames - int(offsets[-1]), 0)
  return np.arange(num_clips, dtype=np.int64)[:, None] + offsets[None, :]


def pseudo_anomaly_clip_indices(num_frames: int, time_steps: int, interval: int, delta: int,
                                speeds: Sequence[int]) -> np.ndarray:
  """Frame indices of a video's skip-frame pseudo-anomalous clips (as LNTRA's).

  For each speed-up s the clips of `clip_indices` with s * interval and s * delta: the same
  clip geometry as if the video played s times faster, which a model of normal motion should
  not predict well.

  Returns:
    int64 [N, k+1]: the clips of every speed, in the order of `speeds`.
  """
  tables = [clip_indices(num_frames, time_steps, interval * s, delta * s) for s in speeds]
  return np.concatenate(tables, axis=0) if tables else np.zeros((0, time_steps + 1), np.int64)


def _video_clip_table(videos: Sequence[Video], data_cfg, speeds: Sequence[int] = (1,)
                      ) -> np.ndarray:
  """int64 [N_clips, k+1] indices into the concatenation of all videos' frames.

  speeds: (1,) for the training clips; speed-ups >= 2 for pseudo-anomalous clips.
  """
  tables = []
  offset = 0
  for video in videos:
    tables.append(pseudo_anomaly_clip_indices(
        video.num_frames, data_cfg.time_steps, data_cfg.interval, data_cfg.delta, speeds) +
                  offset)
    offset += video.num_frames
  if not tables:
    return np.zeros((0, data_cfg.time_steps + 1), np.int64)
  return np.concatenate(tables, axis=0)


def count_clips(videos: Sequence[Video], data_cfg) -> int:
  """Number of clips of `videos` under data_cfg's clip geometry."""
  return sum(max(v.num_frames - data_cfg.clip_span, 0) for v in videos)


@dataclasses.dataclass(frozen=True)
class ClipData:
  """A clip dataset and its size.

  With several input pipelines (multi-worker training, see `training_dataset`'s input_context)
  each has its own ClipData over its share of the clips; the epoch length is still counted in
  global steps, the same on every pipeline, as lock-step training requires.

  Attributes:
    dataset: yields float32 [B, k+1, H, W, C] batches of background-subtracted clips; the k
      inputs come first, the target last.
    num_clips: clips in one pass over this pipeline's share of the videos.
    batch_size: B (per replica when built for an input context).
    global_batch_size: clips of one step over all replicas; 0 means batch_size.
    total_clips: clips of all input pipelines together; 0 means num_clips.
  """

  dataset: tf.data.Dataset
  num_clips: int
  batch_size: int
  global_batch_size: int = 0
  total_clips: int = 0

  def steps_per_epoch(self, clips_per_epoch: int = 0) -> int:
    """Global steps per epoch: clips_per_epoch (0: every clip once) // global batch, >= 1."""
    total = clips_per_epoch or self.total_clips or self.num_clips
    return max(total // (self.global_batch_size or self.batch_size), 1)


def batch_size_for(data_cfg, input_context: Optional[tf.distribute.InputContext]) -> int:
  """The batch one input pipeline yields: the global batch, or per replica under a context.

  Raises:
    DataError: the global batch does not divide among the replicas.
  """
  if input_context is None:
    return data_cfg.batch_size
  try:
    return input_context.get_per_replica_batch_size(data_cfg.batch_size)
  except ValueError as error:
    raise DataError(f"--batch_size {data_cfg.batch_size} cannot be split evenly over "
                    f"{input_context.num_replicas_in_sync} replicas: {error}") from None


def _clip_batches(table: np.ndarray, paths: Sequence[str], frames: Optional[tf.Tensor],
                  background: np.ndarray, data_cfg, batch_size: int, training: bool,
                  seed: int, clips_drawn: int = 0) -> tf.data.Dataset:
  """Batches of the clips of an index table, gathered from the frame cache or decoded; in
  training, the stream continues after its first `clips_drawn` clips."""
  clips = tf.data.Dataset.from_tensor_slices(table)
  if training:
    # Clip rows are a few int64s, so the buffer holds all of them: a perfect shuffle for the
    # price of num_clips * (k+1) * 8 bytes.
    clips = clips.shuffle(len(table), seed=seed, reshuffle_each_iteration=True)
    clips = clips.repeat()
    if clips_drawn:
      # Skipped as index rows, before any frame is gathered or decoded: a resumed run draws
      # the batches an uninterrupted one would have drawn next, for the price of counting
      # through the indices of the passes already done.
      clips = clips.skip(clips_drawn)
  if data_cfg.frame_cache == "memory":
    return (clips.batch(batch_size, drop_remainder=training)
            # Gathering a whole batch of index rows copies each frame once.
            .map(lambda rows: tf.gather(frames, rows), num_parallel_calls=AUTOTUNE,
                 deterministic=True))
  if data_cfg.frame_cache == "none":
    path_table = tf.constant(paths, tf.string)
    background_t = tf.constant(background)
    return (clips.map(lambda row: tf.gather(path_table, row))
            .unbatch()
            # Must stay ordered: the next batch() regroups consecutive frames into clips.
            .map(_decoder(paths, data_cfg.image_size, data_cfg.channels),
                 num_parallel_calls=AUTOTUNE, deterministic=True)
            .batch(data_cfg.time_steps + 1, drop_remainder=True)
            .map(lambda clip: clip - background_t)
            .batch(batch_size, drop_remainder=training))
  raise ValueError(f"Unknown frame_cache {data_cfg.frame_cache!r}.")


def training_dataset(videos: Sequence[Video], background: np.ndarray, data_cfg,
                     training: bool = True,
                     input_context: Optional[tf.distribute.InputContext] = None,
                     pseudo_speeds: Sequence[int] = (), batches_drawn: int = 0) -> ClipData:
  """Builds the clip dataset of the given videos.

  With data_cfg.frame_cache == "memory" every frame is decoded once (here, eagerly) into one
  float32 tensor in host memory, already background subtracted, and a clip is a gather from it
  (costs frames x H x W x C x 4 bytes of RAM); with "none" each clip's frames are decoded from
  disk when it is drawn (about 30x slower; for datasets larger than memory).

  Args:
    videos: the videos to cut clips from (clips never cross videos).
    background: float32 [H, W, C] subtracted from every frame.
    data_cfg: config.DataConfig (clip geometry, image size, channels, batch size, cache, seed).
    training: True: shuffle clip order (seeded, reshuffled every pass), repeat forever and drop
      the last partial batch; the caller bounds epochs with ClipData.steps_per_epoch. False:
      every clip once, in order (video by video, then by first frame), last batch kept.
    input_context: from tf.distribute's distribute_datasets_from_function. The batch is then
      the per-replica one, and with several input pipelines each takes a contiguous range of
      the clip table (sharding by clip index) and decodes only the frames its clips use.
    pseudo_speeds: with speed-ups (training only), every batch is a pair (clips,
      pseudo-anomalous clips) of the same size; the latter are drawn at random from
      `pseudo_anomaly_clip_indices` of the same videos (of this pipeline's frames).
    batches_drawn: (training only) global steps' batches an earlier part of the run already
      drew: the dataset starts where that stream left off (same seed, same order), so a resumed
      run sees the batches an uninterrupted one would have.

  Returns:
    ClipData.

  Raises:
    DataError: a video is shorter than one clip, (memory cache) a frame cannot be decoded, or
      there are fewer clips than input pipelines.
  """
  if not videos:
    raise DataError("No videos to cut clips from.")
  check_clip_length(videos, data_cfg.clip_span)
  image_size = data_cfg.image_size
  channels = data_cfg.channels
  background = check_background(background, image_size, channels)
  table = _video_clip_table(videos, data_cfg)
  total_clips = len(table)
  clip_len = data_cfg.time_steps + 1
  paths = [p for v in videos for p in v.frame_paths]
  batch_size = batch_size_for(data_cfg, input_context)
  shard = ""
  if input_context is not None and input_context.num_input_pipelines > 1:
    pipelines = input_context.num_input_pipelines
    if total_clips < pipelines:
      raise DataError(f"{total_clips} training clips cannot be shared among {pipelines} input "
                      "pipelines.")
    # Contiguous ranges rather than every n-th clip: a pipeline then needs only about
    # 1/pipelines of the frames, which matters for the memory cache.
    table = np.array_split(table, pipelines)[input_context.input_pipeline_id]
    used = np.unique(table)
    table = np.searchsorted(used, table)
    paths = [paths[i] for i in used]
    shard = f" (input pipeline {input_context.input_pipeline_id} of {pipelines})"
  num_clips = len(table)

  if pseudo_speeds and not training:
    raise ValueError("Pseudo-anomalous clips are for training only.")
  if batches_drawn and not training:
    raise ValueError("batches_drawn is for training only.")
  frames = (_frame_cache(paths, image_size, channels, background)
            if data_cfg.frame_cache == "memory" else None)
  # This pipeline's share of a global step: one batch per replica it feeds.
  replicas_fed = (input_context.num_replicas_in_sync // input_context.num_input_pipelines
                  if input_context is not None else 1)
  clips_drawn = batches_drawn * batch_size * replicas_fed
  dataset = _clip_batches(table, paths, frames, background, data_cfg, batch_size, training,
                          data_cfg.seed, clips_drawn)
  if pseudo_speeds:
    pseudo_table = _video_clip_table(videos, data_cfg, pseudo_speeds)
    if shard:
      # Only the clips whose frames this pipeline holds, renumbered like its clip table.
      pseudo_table = pseudo_table[np.isin(pseudo_table, used).all(axis=1)]
      pseudo_table = np.searchsorted(used, pseudo_table)
    if not len(pseudo_table):
      raise DataError(f"No pseudo-anomalous clip at speed-ups {tuple(pseudo_speeds)}: the "
                      f"videos are shorter than {min(pseudo_speeds)} x {data_cfg.clip_span} "
                      "frames.")
    pseudo = _clip_batches(pseudo_table, paths, frames, background, data_cfg, batch_size,
                           training, data_cfg.seed + 1, clips_drawn)
    dataset = tf.data.Dataset.zip((dataset, pseudo))
  dataset = dataset.prefetch(AUTOTUNE)
  logging.info("Clip dataset%s: %d videos, %d clips of %d frames (span %d), batch %d, cache %s, "
               "training=%s.", shard, len(videos), num_clips, clip_len, data_cfg.clip_span,
               batch_size, data_cfg.frame_cache, training)
  return ClipData(dataset=dataset, num_clips=num_clips, batch_size=batch_size,
                  global_batch_size=data_cfg.batch_size, total_clips=total_clips)
