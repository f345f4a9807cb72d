"""Training frames as sharded TFRecords: the writer, the index and the clip reader.

`daml_tf.data.to_tfrecord` decodes the training split once into

    <dir>/train-00000-of-00008.tfrecord ...   the frames, uint8 at model resolution
    <dir>/background.npy                       float32 [H, W, C], pipeline.compute_background
    <dir>/index.json                           dataset, geometry, videos, shards (written last)

and `training_dataset` cuts the same clips from them as `pipeline.training_dataset` cuts from the
frames, for any clip geometry: records hold plain frames, not clips.

A record (a tf.train.Example) holds up to `frames_per_record` consecutive frames of one video:
its video's position in the training split (`video_index`), name (`video`), the index of its
first frame in the video (`first_frame`), `num_frames`, `height`, `width`, `channels` and the
raw bytes (`frames`, uint8 [num_frames, height, width, channels], row-major). A video's records
are consecutive and in frame order within one shard, so a reader carries the last frames of one
record over to the next and no clip is lost at record boundaries; and shards can be divided
among workers by file.

Frames are the frames pipeline's (decoded, converted to the model's channels, resized
bilinearly) rounded to 8 bits: a frame already at model resolution (and channels) comes back
bit for bit, a resized one within half a gray level. Every file operation goes through
tf.io.gfile, so the directory may be on s3:// (with tensorflow-io), gs:// or hdfs://.
"""

import collections
import io
import json
import os
import re
import time
import uuid
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from daml_tf import fileio
from daml_tf.data import layout
from daml_tf.data import pipeline
from daml_tf.data import registry
from daml_tf.data.layout import DataError, Video

INDEX_FILE = "index.json"
BACKGROUND_FILE = "background.npy"
FORMAT = "daml_tf.frames_tfrecord"
VERSION = 1
DEFAULT_FRAMES_PER_RECORD = 64
DEFAULT_SHARDS = 16
# Decoded clips waiting in the training shuffle buffer (uint8, so a clip costs
# (k+1) x H x W x C bytes): about 1,200 clips of UCSD Ped2, 450 of Avenue.
SHUFFLE_BUFFER_BYTES = 256 * 2**20
# Shard files read at once, and blocks of consecutive frames clips are drawn from at once.
_FILE_CYCLE = 4
_BLOCK_CYCLE = 8
_SHARD_PATTERN = re.compile(r"^train-\d{5}-of-\d{5}\.tfrecord$")
_FEATURES = {
    "video_index": tf.io.FixedLenFeature([], tf.int64),
    "first_frame": tf.io.FixedLenFeature([], tf.int64),
    "frames": tf.io.FixedLenFeature([], tf.string),
}

# What the clip-length check needs of a video; the index has no frame paths.
_IndexedVideo = collections.namedtuple("_IndexedVideo", ["name", "num_frames"])


def shard_name(shard: int, num_shards: int) -> str:
  return f"train-{shard:05d}-of-{num_shards:05d}.tfrecord"


# ------------------------------------------------------------------------------------------------
# Small gfile helpers.


def _read_bytes(path: str) -> bytes:
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read()


def _listdir(path: str) -> List[str]:
  try:
    # Some filesystems (GCS) mark directories with a trailing slash.
    return [name.rstrip("/") for name in tf.io.gfile.listdir(path)]
  except tf.errors.NotFoundError:
    # An object store has no empty directories: makedirs may leave nothing to list.
    return []


def _remove_quietly(path: str) -> None:
  try:
    tf.io.gfile.remove(path)
  except tf.errors.NotFoundError:
    pass


def _is_ours(name: str) -> bool:
  """Files a conversion writes (also half-written ones), the only ones --overwrite removes."""
  name = name.split(fileio.TMP_MARK)[0]
  return bool(_SHARD_PATTERN.match(name)) or name in (INDEX_FILE, BACKGROUND_FILE)


# ------------------------------------------------------------------------------------------------
# Writing.


def assign_shards(frame_counts: Sequence[int], num_shards: int) -> List[List[int]]:
  """Spreads whole videos over shards, balancing frames (longest video to the lightest shard).

  Args:
    frame_counts: frames of each video.
    num_shards: shards to fill; at most len(frame_counts), so that none is empty.

  Returns:
    For each shard, the indices of its videos in increasing order.
  """
  loads = [0] * num_shards
  shards: List[List[int]] = [[] for _ in range(num_shards)]
  # Ties broken by video index, so the assignment is a function of the counts alone.
  for video in sorted(range(len(frame_counts)), key=lambda i: (-frame_counts[i], i)):
    lightest = min(range(num_shards), key=lambda s: (loads[s], s))
    shards[lightest].append(video)
    loads[lightest] += frame_counts[video]
  return [sorted(s) for s in shards]


def _to_uint8(frames: np.ndarray) -> np.ndarray:
  # Rounding (not tf.image.convert_image_dtype's floor of x * 255.5) keeps the error within
  # half a level, and maps the frames of 8-bit images exactly back to their levels.
  return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)


def _example(video_index: int, name: str, first_frame: int, frames: np.ndarray) -> bytes:
  def ints(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

  def raw(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

  height, width, channels = frames.shape[1:]
  return tf.train.Example(features=tf.train.Features(feature={
      "video_index": ints(video_index),
      "video": raw(name.encode("utf-8")),
      "first_frame": ints(first_frame),
      "num_frames": ints(len(frames)),
      "height": ints(height),
      "width": ints(width),
      "channels": ints(channels),
      "frames": raw(frames.tobytes()),
  })).SerializeToString()


class _ShardWriters:
  """One TFRecordWriter per shard, on temporary names until `commit` renames them all."""

  def __init__(self, output_dir: str, num_shards: int):
    self.names = [shard_name(i, num_shards) for i in range(num_shards)]
    self._final = [os.path.join(output_dir, n) for n in self.names]
    suffix = f"{fileio.TMP_MARK}{uuid.uuid4().hex}"
    self._tmp = [p + suffix for p in self._final]
    self._writers = [tf.io.TFRecordWriter(p) for p in self._tmp]
    self.records = [0] * num_shards

  def write(self, shard: int, record: bytes) -> None:
    self._writers[shard].write(record)
    self.records[shard] += 1

  def commit(self) -> None:
    for writer in self._writers:
      writer.close()
    for tmp, final in zip(self._tmp, self._final):
      tf.io.gfile.rename(tmp, final, overwrite=True)

  def abort(self) -> None:
    for writer, tmp in zip(self._writers, self._tmp):
      writer.close()
      _remove_quietly(tmp)


class _Chunker:
  """Cuts a stream of frame batches (all videos' frames, in order) into per-video records."""

  def __init__(self, frame_counts: Sequence[int], frames_per_record: int):
    self._counts = frame_counts
    self._size = frames_per_record
    self._video = 0
    self._done = 0  # Frames of the current video already cut into records.
    self._pending: List[np.ndarray] = []
    self._held = 0

  def add(self, batch: np.ndarray) -> Iterator[Tuple[int, int, np.ndarray]]:
    """Yields the (video index, first frame, frames) records the batch completes."""
    while len(batch):
      while self._counts[self._video] == self._done + self._held:
        self._video, self._done = self._video + 1, 0
      take = min(len(batch), self._size - self._held,
                 self._counts[self._video] - self._done - self._held)
      self._pending.append(batch[:take])
      self._held += take
      batch = batch[take:]
      if (self._held == self._size or
          self._done + self._held == self._counts[self._video]):
        yield self._video, self._done, np.concatenate(self._pending)
        self._done += self._held
        self._pending, self._held = [], 0


def write_tfrecords(videos: Sequence[Video], output_dir: str, dataset: str,
                    image_size: Tuple[int, int], channels: int, num_shards: int,
                    frames_per_record: int = DEFAULT_FRAMES_PER_RECORD,
                    overwrite: bool = False, source: str = "") -> Dict:
  """Decodes the videos once into sharded TFRecords, the background and the index.

  The frames are decoded in one ordered stream, batched as `pipeline.compute_background`
  batches them, so the background is bit for bit the frames pipeline's. Shards and the
  background are written under temporary names and renamed; the index is written last, so a
  directory with an index is complete.

  Args:
    videos: the training videos, in split order.
    output_dir: the directory to write (created; may be remote).
    dataset: registry name, recorded in the index.
    image_size: (height, width) of the model.
    channels: 1 or 3.
    num_shards: shard files; between 1 and the number of videos (a video is never split).
    frames_per_record: frames of one record (the memory granularity of reading).
    overwrite: replace an earlier conversion in output_dir; without it one is an error.
    source: where the frames came from, recorded in the index.

  Returns:
    The index (as written to index.json).

  Raises:
    DataError: a bad shard count, an existing conversion without overwrite, or naming a frame
      that cannot be decoded.
  """
  if not videos:
    raise DataError("No training videos to convert.")
  if not 1 <= num_shards <= len(videos):
    raise DataError(f"--shards must be between 1 and the number of training videos "
                    f"({len(videos)}; a video is never split across shards), got {num_shards}.")
  if frames_per_record < 1:
    raise DataError(f"--frames_per_record must be >= 1, got {frames_per_record}.")
  layout.ensure_filesystem(output_dir)
  index_path = os.path.join(output_dir, INDEX_FILE)
  if tf.io.gfile.exists(index_path) and not overwrite:
    raise DataError(f"{output_dir!r} already holds a TFRecord conversion ({INDEX_FILE}); pass "
                    "--overwrite to replace it.")
  logging.info("Converting %d training videos of %s (%s) at %dx%dx%d into %d shard(s) in %s.",
               len(videos), dataset, source or "given videos", image_size[0], image_size[1],
               channels, num_shards, output_dir)
  tf.io.gfile.makedirs(output_dir)
  # The index goes first: a conversion interrupted from here on is incomplete, not stale.
  stale = sorted((n for n in _listdir(output_dir) if _is_ours(n)), key=lambda n: n != INDEX_FILE)
  for name in stale:
    _remove_quietly(os.path.join(output_dir, name))
  if stale:
    logging.info("Removed %d file(s) of an earlier conversion from %s.", len(stale), output_dir)

  counts = [v.num_frames for v in videos]
  assignment = assign_shards(counts, num_shards)
  shard_of = {video: shard for shard, members in enumerate(assignment) for video in members}
  paths = [p for v in videos for p in v.frame_paths]
  start = time.time()
  writers = _ShardWriters(output_dir, num_shards)
  chunker = _Chunker(counts, frames_per_record)

  def write_through(batches):
    # Each batch goes on to the background's running sum once its frames are written.
    written, logged = 0, time.time()
    for batch in batches:
      for video, first, frames in chunker.add(_to_uint8(batch)):
        writers.write(shard_of[video], _example(video, videos[video].name, first, frames))
      written += len(batch)
      if time.time() - logged > 30:
        logging.info("%d of %d frames written.", written, len(paths))
        logged = time.time()
      yield batch

  try:
    background = pipeline.mean_frame(write_through(
        pipeline.iterate_frames(paths, image_size, channels)))
    writers.commit()
  except BaseException:
    writers.abort()
    raise
  buffer = io.BytesIO()
  np.save(buffer, background)
  fileio.write_bytes_atomically(os.path.join(output_dir, BACKGROUND_FILE), buffer.getvalue())
  index = {
      "format": FORMAT,
      "version": VERSION,
      "dataset": dataset,
      "image_height": int(image_size[0]),
      "image_width": int(image_size[1]),
      "channels": int(channels),
      "dtype": "uint8",
      "frames_per_record": int(frames_per_record),
      "source": source,
      "background": BACKGROUND_FILE,
      "num_videos": len(videos),
      "num_frames": len(paths),
      "videos": [{"name": v.name, "num_frames": v.num_frames, "shard": writers.names[shard_of[i]]}
                 for i, v in enumerate(videos)],
      "shards": [{"file": writers.names[s], "num_records": writers.records[s],
                  "num_videos": len(assignment[s]),
                  "num_frames": sum(counts[i] for i in assignment[s])}
                 for s in range(num_shards)],
  }
  fileio.write_bytes_atomically(index_path, json.dumps(index, indent=1).encode("utf-8"))
  logging.info("Wrote %d frames of %d videos to %d shard(s) in %s in %.1f s.", len(paths),
               len(videos), num_shards, output_dir, time.time() - start)
  return index


def convert(dataset: str, data_dir: str, output_dir: str, num_shards: int = 0,
            image_height: int = 0, image_width: int = 0, channels: int = 0,
            frames_per_record: int = DEFAULT_FRAMES_PER_RECORD,
            overwrite: bool = False) -> Dict:
  """Writes the training split of a frames-layout dataset as TFRecords (see write_tfrecords).

  Args:
    dataset: registry name.
    data_dir: the dataset root, or a folder holding `<dataset>/` (local or remote).
    output_dir: the TFRecord directory to write (local or remote).
    num_shards: shard files; 0: one per video, at most DEFAULT_SHARDS.
    image_height, image_width, channels: model resolution; 0: the dataset's registry default.
    frames_per_record: frames of one record.
    overwrite: replace an earlier conversion in output_dir.

  Returns:
    The index written.

  Raises:
    DataError: bad input data or arguments (the message says which).
    UnknownDatasetError: dataset is not in the registry.
  """
  spec = registry.get_spec(dataset)
  image_size = (image_height or spec.image_size[0], image_width or spec.image_size[1])
  channels = channels or spec.channels
  if min(image_size) < 8 or channels not in (1, 3):
    raise DataError(f"Image size {image_size[0]}x{image_size[1]} must be at least 8x8 and "
                    f"channels 1 or 3, got {channels}.")
  root, videos = layout.find_videos(dataset, data_dir, "training")
  num_shards = num_shards or min(len(videos), DEFAULT_SHARDS)
  return write_tfrecords(videos, output_dir, dataset, image_size, channels, num_shards,
                         frames_per_record=frames_per_record, overwrite=overwrite, source=root)


# ------------------------------------------------------------------------------------------------
# The index and the background.


def load_index(tfrecord_dir: str) -> Dict:
  """Reads `<tfrecord_dir>/index.json`.

  Raises:
    DataError: there is no index (no finished conversion) or it is not one of ours.
  """
  layout.ensure_filesystem(tfrecord_dir)
  path = os.path.join(tfrecord_dir, INDEX_FILE)
  if not tf.io.gfile.exists(path):
    raise DataError(
        f"No TFRecord index {path!r} (--tfrecord_dir): write the TFRecords first with python -m "
        f"daml_tf.data.to_tfrecord --dataset=... --data_dir=... --output_dir={tfrecord_dir}")
  try:
    index = json.loads(_read_bytes(path).decode("utf-8"))
  except (ValueError, UnicodeDecodeError) as error:
    raise DataError(f"Cannot read the TFRecord index {path!r}: {error}") from None
  if not isinstance(index, dict) or index.get("format") != FORMAT:
    raise DataError(f"{path!r} is not a daml_tf TFRecord index (format {FORMAT!r}).")
  if index.get("version") != VERSION:
    raise DataError(f"{path!r} has format version {index.get('version')}, this code reads "
                    f"version {VERSION}: rewrite it with daml_tf.data.to_tfrecord --overwrite.")
  return index


def check_index(index: Dict, data_cfg) -> None:
  """Checks the TFRecords were written for data_cfg's dataset, image size and channels.

  Raises:
    DataError: naming every field that differs.
  """
  wanted = {"dataset": data_cfg.dataset, "image_height": data_cfg.image_height,
            "image_width": data_cfg.image_width, "channels": data_cfg.channels}
  differences = [f"{name} {index.get(name)!r} (wanted {value!r})"
                 for name, value in wanted.items() if index.get(name) != value]
  if differences:
    raise DataError(
        f"The TFRecords in --tfrecord_dir were written with {', '.join(differences)}: rewrite "
        f"them with daml_tf.data.to_tfrecord for this configuration or change the flags.")


def load_background(tfrecord_dir: str) -> np.ndarray:
  """The background written beside the TFRecords, float32 [H, W, C].

  Raises:
    DataError: it is missing or its shape is not the index's image size.
  """
  index = load_index(tfrecord_dir)
  path = os.path.join(tfrecord_dir, index.get("background", BACKGROUND_FILE))
  if not tf.io.gfile.exists(path):
    raise DataError(f"TFRecord background {path!r} is missing: rewrite the TFRecords with "
                    "daml_tf.data.to_tfrecord --overwrite.")
  background = np.load(io.BytesIO(_read_bytes(path)))
  shape = (index["image_height"], index["image_width"], index["channels"])
  if background.shape != shape:
    raise DataError(f"TFRecord background {path!r} has shape {background.shape}, the index "
                    f"says {shape}.")
  return background.astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Reading clips.


def _blocks_of_file(path: tf.Tensor, frame_shape: Tuple[int, int, int], span: int,
                    offsets: np.ndarray) -> tf.data.Dataset:
  """(frames, clip rows) blocks of one shard file: every clip exactly once, in order.

  A block is a record's frames preceded by the frames of the record before it (same video,
  adjacent) that clips starting there still need; its rows are the clips starting in it whose
  target lies in it.
  """
  offsets = tf.constant(offsets, tf.int64)

  def parse(record):
    example = tf.io.parse_single_example(record, _FEATURES)
    frames = tf.reshape(tf.io.decode_raw(example["frames"], tf.uint8), (-1,) + frame_shape)
    return example["video_index"], example["first_frame"], frames

  def carry(state, record):
    video, next_frame, tail = state
    record_video, first, frames = record
    continues = tf.logical_and(tf.equal(video, record_video), tf.equal(next_frame, first))
    block = tf.cond(continues, lambda: tf.concat([tail, frames], 0), lambda: frames)
    num_clips = tf.maximum(tf.shape(block, out_type=tf.int64)[0] - span, 0)
    rows = tf.range(num_clips)[:, tf.newaxis] + offsets[tf.newaxis, :]
    # Frames from the first clip start not yet used on: the next record's clips need them.
    state = (record_video, first + tf.shape(frames, out_type=tf.int64)[0], block[num_clips:])
    return state, (block, rows)

  initial = (tf.constant(-1, tf.int64), tf.constant(-1, tf.int64),
             tf.zeros((0,) + frame_shape, tf.uint8))
  return (tf.data.TFRecordDataset(path)
          .map(parse)
          .scan(initial, carry)
          .filter(lambda block, rows: tf.shape(rows)[0] > 0))


def training_dataset(tfrecord_dir: str, background: np.ndarray, data_cfg,
                     training: bool = True,
                     input_context: Optional[tf.distribute.InputContext] = None,
                     shuffle_buffer_bytes: int = SHUFFLE_BUFFER_BYTES) -> pipeline.ClipData:
  """The clip dataset of the TFRecords in tfrecord_dir; see pipeline.training_dataset.

  Yields the clips pipeline.training_dataset yields for the same videos and background (up to
  the 8-bit rounding of resized frames), in another order. Shard files are read in parallel
  (interleaved); with data_cfg.frame_cache == "memory" the decoded uint8 frames are kept in
  RAM after the first pass (a quarter of the frames pipeline's float32 cache), with "none"
  every pass reads the files again.

  Args:
    tfrecord_dir: written by daml_tf.data.to_tfrecord (local or remote).
    background: float32 [H, W, C] subtracted from every frame (normally load_background's).
    data_cfg: config.DataConfig (clip geometry, image size, channels, batch size, cache, seed).
    training: True: shuffle (seeded: file order, then, with the memory cache, all blocks of
      frames, then clips in a buffer of shuffle_buffer_bytes), repeat forever, drop the last
      partial batch. False: every clip once, last batch kept, in order: shard by shard, then
      video by video, then by first frame (with one shard, the frames pipeline's order).
    input_context: from distribute_datasets_from_function. The batch is then the per-replica
      one, and with several input pipelines each reads every n-th shard file.
    shuffle_buffer_bytes: memory of decoded clips the training shuffle draws from.

  Returns:
    pipeline.ClipData whose num_clips counts this pipeline's clips and total_clips all of them.

  Raises:
    DataError: no index, an index for another dataset, image size or channels, a missing
      shard, a video shorter than one clip, or fewer shard files than input pipelines.
  """
  index = load_index(tfrecord_dir)
  check_index(index, data_cfg)
  layout.check_clip_length([_IndexedVideo(v["name"], v["num_frames"]) for v in index["videos"]],
                           data_cfg.clip_span)
  frame_shape = (data_cfg.image_height, data_cfg.image_width, data_cfg.channels)
  background = pipeline.check_background(background, data_cfg.image_size, data_cfg.channels)
  shards = index["shards"]
  batch_size = pipeline.batch_size_for(data_cfg, input_context)
  pipelines, pipeline_id = 1, 0
  if input_context is not None:
    pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
  if len(shards) < pipelines:
    raise DataError(f"{tfrecord_dir!r} has {len(shards)} shard file(s), fewer than the "
                    f"{pipelines} input pipelines: rewrite it with --shards >= {pipelines}.")
  mine = shards[pipeline_id::pipelines]
  files = [os.path.join(tfrecord_dir, s["file"]) for s in mine]
  for path in files:
    if not tf.io.gfile.exists(path):
      raise DataError(f"TFRecord shard {path!r} listed in the index is missing.")
  names = {s["file"] for s in mine}

  def clips_of(num_frames):
    return max(num_frames - data_cfg.clip_span, 0)

  num_clips = sum(clips_of(v["num_frames"]) for v in index["videos"] if v["shard"] in names)
  total_clips = sum(clips_of(v["num_frames"]) for v in index["videos"])
  offsets = pipeline.clip_indices(data_cfg.clip_span + 1, data_cfg.time_steps,
                                  data_cfg.interval, data_cfg.delta)[0]
  clip_bytes = int(np.prod(frame_shape)) * len(offsets)
  seed = data_cfg.seed

  dataset = tf.data.Dataset.from_tensor_slices(tf.constant(files, tf.string))
  if training:
    dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  # Ordered everywhere: with the seeds, a training run's clip order is reproducible.
  dataset = dataset.interleave(
      lambda path: _blocks_of_file(path, frame_shape, data_cfg.clip_span, offsets),
      cycle_length=min(len(files), _FILE_CYCLE) if training else 1,
      num_parallel_calls=pipeline.AUTOTUNE, deterministic=True)
  if data_cfg.frame_cache == "memory":
    dataset = dataset.cache()
  elif data_cfg.frame_cache != "none":
    raise ValueError(f"Unknown frame_cache {data_cfg.frame_cache!r}.")
  if training:
    dataset = dataset.repeat()
    if data_cfg.frame_cache == "memory":
      # The cached blocks are in RAM anyway: the buffer holds references to all of them.
      num_blocks = sum(s["num_records"] for s in mine)
      dataset = dataset.shuffle(num_blocks, seed=seed + 1, reshuffle_each_iteration=True)
  dataset = dataset.interleave(
      lambda block, rows: tf.data.Dataset.from_tensor_slices(rows).map(
          lambda row: tf.gather(block, row)),
      cycle_length=_BLOCK_CYCLE if training else 1, block_length=1,
      num_parallel_calls=pipeline.AUTOTUNE, deterministic=True)
  if training:
    buffer = max(batch_size, min(num_clips, shuffle_buffer_bytes // clip_bytes))
    dataset = dataset.shuffle(buffer, seed=seed + 2, reshuffle_each_iteration=True)
  background_t = tf.constant(background)
  dataset = (dataset.batch(batch_size, drop_remainder=training)
             # The scaling of decode_image, so frames of 8-bit images match the frames pipeline.
             .map(lambda clips: tf.image.convert_image_dtype(clips, tf.float32) - background_t,
                  num_parallel_calls=pipeline.AUTOTUNE, deterministic=True)
             .prefetch(pipeline.AUTOTUNE))
  logging.info("TFRecord clip dataset%s: %d of %d shard file(s) in %s, %d of %d clips of %d "
               "frames (span %d), batch %d, cache %s, training=%s.",
               f" (input pipeline {pipeline_id} of {pipelines})" if pipelines > 1 else "",
               len(files), len(shards), tfrecord_dir, num_clips, total_clips, len(offsets),
               data_cfg.clip_span, batch_size, data_cfg.frame_cache, training)
  return pipeline.ClipData(dataset=dataset, num_clips=num_clips, batch_size=batch_size,
                           global_batch_size=data_cfg.batch_size, total_clips=total_clips)
