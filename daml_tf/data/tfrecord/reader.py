"""Reading clips from sharded TFRecords, and their index and background (see the package
docstring)."""

import collections
import io
import json
import os
import struct
from typing import Dict, Iterator, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from daml_tf import fileio
from daml_tf.data import layout
from daml_tf.data import pipeline
from daml_tf.errors import DataError
from daml_tf.data.tfrecord import format as tfr_format

# Decoded clips waiting in the training shuffle buffer (uint8, so a clip costs
# (k+1) x H x W x C bytes): about 1,200 clips of UCSD Ped2, 450 of Avenue.
SHUFFLE_BUFFER_BYTES = 256 * 2**20
# Shard files read at once, and blocks of consecutive frames clips are drawn from at once.
_FILE_CYCLE = 4
_BLOCK_CYCLE = 8
_FEATURES = {
    "video_index": tf.io.FixedLenFeature([], tf.int64),
    "first_frame": tf.io.FixedLenFeature([], tf.int64),
    "frames": tf.io.FixedLenFeature([], tf.string),
}


# What the clip-length check needs of a video; the index has no frame paths.
_IndexedVideo = collections.namedtuple("_IndexedVideo", ["name", "num_frames"])


def load_index(tfrecord_dir: str) -> Dict:
  """Reads `<tfrecord_dir>/index.json`.

  Raises:
    DataError: there is no index (no finished conversion) or it is not one of ours.
  """
  fileio.ensure_filesystem(tfrecord_dir)
  path = os.path.join(tfrecord_dir, tfr_format.INDEX_FILE)
  if not fileio.exists(path):
    raise DataError(
        f"No TFRecord index {path!r} (--tfrecord_dir): write the TFRecords first with python -m "
        f"daml_tf.data.to_tfrecord --dataset=... --data_dir=... --output_dir={tfrecord_dir}")
  try:
    index = json.loads(tfr_format.read_bytes(path).decode("utf-8"))
  except (ValueError, UnicodeDecodeError) as error:
    raise DataError(f"Cannot read the TFRecord index {path!r}: {error}") from None
  if not isinstance(index, dict) or index.get("format") != tfr_format.FORMAT:
    raise DataError(f"{path!r} is not a daml_tf TFRecord index (format {tfr_format.FORMAT!r}).")
  if index.get("version") != tfr_format.VERSION:
    raise DataError(f"{path!r} has format version {index.get('version')}, this code reads "
                    f"version {tfr_format.VERSION}: rewrite it with daml_tf.data.to_tfrecord "
                    "--overwrite.")
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
  path = os.path.join(tfrecord_dir, index.get("background", tfr_format.BACKGROUND_FILE))
  if not fileio.exists(path):
    raise DataError(f"TFRecord background {path!r} is missing: rewrite the TFRecords with "
                    "daml_tf.data.to_tfrecord --overwrite.")
  background = np.load(io.BytesIO(tfr_format.read_bytes(path)))
  shape = (index["image_height"], index["image_width"], index["channels"])
  if background.shape != shape:
    raise DataError(f"TFRecord background {path!r} has shape {background.shape}, the index "
                    f"says {shape}.")
  return background.astype(np.float32)


def _host_records(path: bytes) -> Iterator[bytes]:
  """The records of a TFRecord file TensorFlow cannot open (s3://, ...), read through fsspec.

  The framing is TFRecord's (little-endian uint64 length, its masked CRC-32C, the data, the
  data's masked CRC-32C); the checksums are not verified here, the object store's own
  integrity checks cover the transfer.
  """
  path = path.decode() if isinstance(path, bytes) else path
  with fileio.GFile(path, "rb") as f:
    while True:
      header = f.read(12)
      if not header:
        return
      length = struct.unpack("<Q", header[:8])[0] if len(header) == 12 else -1
      data = f.read(length) if length >= 0 else b""
      if length < 0 or len(data) != length or len(f.read(4)) != 4:
        raise DataError(f"TFRecord shard {path!r} is truncated.")
      yield data


def _records(path: tf.Tensor, native: bool) -> tf.data.Dataset:
  if native:
    return tf.data.TFRecordDataset(path)
  return tf.data.Dataset.from_generator(_host_records, args=(path,),
                                        output_signature=tf.TensorSpec([], tf.string))


def _blocks_of_file(path: tf.Tensor, frame_shape: Tuple[int, int, int], span: int,
                    offsets: np.ndarray, native: bool = True) -> tf.data.Dataset:
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
  return (_records(path, native)
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
    if not fileio.exists(path):
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

  native = fileio.is_tf_native(tfrecord_dir)
  dataset = tf.data.Dataset.from_tensor_slices(tf.constant(files, tf.string))
  if training:
    dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  # Ordered everywhere: with the seeds, a training run's clip order is reproducible.
  dataset = dataset.interleave(
      lambda path: _blocks_of_file(path, frame_shape, data_cfg.clip_span, offsets, native),
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
