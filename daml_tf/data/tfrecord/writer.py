"""Writing the training split as sharded TFRecords (see the package docstring)."""

import io
import json
import os
import shutil
import tempfile
import time
import uuid
from typing import Dict, Iterator, List, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from daml_tf import fileio
from daml_tf.data import layout
from daml_tf.data import pipeline
from daml_tf.data import registry
from daml_tf.data.layout import Video
from daml_tf.errors import DataError
from daml_tf.data.tfrecord import format as tfr_format


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
  """One TFRecordWriter per shard, on temporary names until `commit` renames them all.

  Where TensorFlow cannot write the output directory (s3://, ...), the shards are written to a
  local temporary folder and uploaded to their final names by `commit`: an object appears whole
  or not at all, so no temporary name is needed there.
  """

  def __init__(self, output_dir: str, num_shards: int):
    self.names = [tfr_format.shard_name(i, num_shards) for i in range(num_shards)]
    self._final = [os.path.join(output_dir, n) for n in self.names]
    self._local_dir = None
    if fileio.is_tf_native(output_dir):
      suffix = f"{fileio.TMP_MARK}{uuid.uuid4().hex}"
      self._tmp = [p + suffix for p in self._final]
    else:
      self._local_dir = tempfile.mkdtemp(prefix="daml_tf-shards-")
      self._tmp = [os.path.join(self._local_dir, n) for n in self.names]
    self._writers = [tf.io.TFRecordWriter(p) for p in self._tmp]
    self.records = [0] * num_shards

  def write(self, shard: int, record: bytes) -> None:
    self._writers[shard].write(record)
    self.records[shard] += 1

  def commit(self) -> None:
    for writer in self._writers:
      writer.close()
    for tmp, final in zip(self._tmp, self._final):
      if self._local_dir:
        fileio.copy(tmp, final, overwrite=True)
      else:
        fileio.rename(tmp, final, overwrite=True)
    self._remove_local_dir()

  def abort(self) -> None:
    for writer, tmp in zip(self._writers, self._tmp):
      writer.close()
      tfr_format.remove_quietly(tmp)
    self._remove_local_dir()

  def _remove_local_dir(self) -> None:
    if self._local_dir:
      shutil.rmtree(self._local_dir, ignore_errors=True)


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
                    frames_per_record: int = tfr_format.DEFAULT_FRAMES_PER_RECORD,
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
  fileio.ensure_filesystem(output_dir)
  index_path = os.path.join(output_dir, tfr_format.INDEX_FILE)
  if fileio.exists(index_path) and not overwrite:
    raise DataError(f"{output_dir!r} already holds a TFRecord conversion "
                    f"({tfr_format.INDEX_FILE}); pass "
                    "--overwrite to replace it.")
  logging.info("Converting %d training videos of %s (%s) at %dx%dx%d into %d shard(s) in %s.",
               len(videos), dataset, source or "given videos", image_size[0], image_size[1],
               channels, num_shards, output_dir)
  fileio.makedirs(output_dir)
  # The index goes first: a conversion interrupted from here on is incomplete, not stale.
  stale = sorted((n for n in tfr_format.listdir(output_dir) if tfr_format.is_ours(n)),
                 key=lambda n: n != tfr_format.INDEX_FILE)
  for name in stale:
    tfr_format.remove_quietly(os.path.join(output_dir, name))
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
  fileio.write_bytes_atomically(os.path.join(output_dir, tfr_format.BACKGROUND_FILE),
                                buffer.getvalue())
  index = {
      "format": tfr_format.FORMAT,
      "version": tfr_format.VERSION,
      "dataset": dataset,
      "image_height": int(image_size[0]),
      "image_width": int(image_size[1]),
      "channels": int(channels),
      "dtype": "uint8",
      "frames_per_record": int(frames_per_record),
      "source": source,
      "background": tfr_format.BACKGROUND_FILE,
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
            frames_per_record: int = tfr_format.DEFAULT_FRAMES_PER_RECORD,
            overwrite: bool = False) -> Dict:
  """Writes the training split of a frames-layout dataset as TFRecords (see write_tfrecords).

  Args:
    dataset: registry name.
    data_dir: the dataset root, or a folder holding `<dataset>/` (local or remote).
    output_dir: the TFRecord directory to write (local or remote).
    num_shards: shard files; 0: one per video, at most tfr_format.DEFAULT_SHARDS.
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
  num_shards = num_shards or min(len(videos), tfr_format.DEFAULT_SHARDS)
  return write_tfrecords(videos, output_dir, dataset, image_size, channels, num_shards,
                         frames_per_record=frames_per_record, overwrite=overwrite, source=root)
