"""The on-disk format of a TFRecord directory: file names and what the writer and reader share."""

import re
from typing import List

import tensorflow as tf

from daml_tf import fileio

INDEX_FILE = "index.json"
BACKGROUND_FILE = "background.npy"
FORMAT = "daml_tf.frames_tfrecord"
VERSION = 1
DEFAULT_FRAMES_PER_RECORD = 64
DEFAULT_SHARDS = 16
SHARD_PATTERN = re.compile(r"^train-\d{5}-of-\d{5}\.tfrecord$")


def shard_name(shard: int, num_shards: int) -> str:
  return f"train-{shard:05d}-of-{num_shards:05d}.tfrecord"


def read_bytes(path: str) -> bytes:
  with fileio.GFile(path, "rb") as f:
    return f.read()


def listdir(path: str) -> List[str]:
  try:
    # Some filesystems (GCS) mark directories with a trailing slash.
    return [name.rstrip("/") for name in fileio.listdir(path)]
  except tf.errors.NotFoundError:
    # An object store has no empty directories: makedirs may leave nothing to list.
    return []


def remove_quietly(path: str) -> None:
  try:
    fileio.remove(path)
  except tf.errors.NotFoundError:
    pass


def is_ours(name: str) -> bool:
  """Files a conversion writes (also half-written ones), the only ones --overwrite removes."""
  name = name.split(fileio.TMP_MARK)[0]
  return bool(SHARD_PATTERN.match(name)) or name in (INDEX_FILE, BACKGROUND_FILE)
