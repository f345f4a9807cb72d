"""Writing a file or a directory so that readers never see it half-written."""

import os
from typing import Callable
import uuid

import tensorflow as tf

# Marks a temporary sibling; cleaners (data.tfrecord) recognise their own by it.
TMP_MARK = ".tmp-"


def write_atomically(path: str, write: Callable[[str], None], directory: bool = False) -> str:
  """Calls write(temporary path) on a temporary sibling of `path`, then renames it to `path`.

  A rename is atomic on local and POSIX file systems, so a reader (TF Serving looking for the
  newest version, a resumed conversion) sees nothing or everything. Object stores (gs://,
  s3://) cannot rename a directory: there a directory is written in place. A file replaces an
  existing one; a directory must not exist yet.

  Args:
    path: the file or directory to write (any tf.io.gfile path).
    write: writes the complete file or directory at the path it is given.
    directory: whether `path` is a directory.

  Returns:
    path.
  """
  parent = os.path.dirname(path.rstrip("/"))
  if parent:
    tf.io.gfile.makedirs(parent)
  if directory and "://" in path:
    write(path)
    return path
  # The mark makes the name non-numeric too, so TF Serving ignores a version being written.
  temporary = f"{path.rstrip('/')}{TMP_MARK}{uuid.uuid4().hex[:8]}"
  try:
    write(temporary)
    tf.io.gfile.rename(temporary, path, overwrite=not directory)
  finally:
    if tf.io.gfile.exists(temporary):
      if tf.io.gfile.isdir(temporary):
        tf.io.gfile.rmtree(temporary)
      else:
        tf.io.gfile.remove(temporary)
  return path


def write_bytes_atomically(path: str, contents: bytes) -> str:
  """Writes `contents` to the file `path` atomically (see write_atomically)."""

  def write(temporary):
    with tf.io.gfile.GFile(temporary, "wb") as f:
      f.write(contents)

  return write_atomically(path, write)
