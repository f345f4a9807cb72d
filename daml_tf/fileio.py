"""Files on any filesystem, and writing them so that readers never see them half-written.

Every path the project reads or writes goes through this module. Local paths and the schemes
TensorFlow serves itself (`gs://`, `ram://`) go to tf.io.gfile, so TensorFlow's own readers
(tf.data, checkpoints, SavedModels) use them directly. Any other scheme (`s3://`, `az://`,
`hdfs://`, ... whatever fsspec has a filesystem for) goes through fsspec: tensorflow-io, which
used to plug those schemes into TensorFlow, is abandoned and never supported TF >= 2.17. Where a
TensorFlow reader or writer needs such a path (a run directory's checkpoints, a SavedModel), the
entry point works on a local mirror of it (`mirrored`), uploaded after every checkpoint and at
the end.
"""

import contextlib
import os
import shutil
import tempfile
import threading
from typing import Callable, Dict, Iterator, List, Optional, Tuple
import uuid

from absl import logging
import tensorflow as tf

from daml_tf.errors import DataError

# ------------------------------------------------------------------------------------------------
# Which library serves a path.


def scheme_of(path: str) -> str:
  """The URL scheme of `path` ("" for a local path)."""
  scheme, separator, _ = str(path).partition("://")
  return scheme if separator else ""


def is_tf_native(path: str) -> bool:
  """Whether TensorFlow's own file systems serve `path` (local, gs://, ram://)."""
  return scheme_of(path) in tf.io.gfile.get_registered_schemes()


def is_remote(path: str) -> bool:
  """Whether `path` is a URL rather than a local path."""
  return bool(scheme_of(path))


def _storage_options(scheme: str) -> Dict:
  if scheme not in ("s3", "s3a"):
    return {}
  # tensorflow-io's variables, kept so existing set-ups go on working: S3_ENDPOINT (host:port or
  # URL) with S3_USE_HTTPS=0 for S3-compatible stores. AWS_ENDPOINT_URL is read by botocore itself.
  endpoint = os.environ.get("S3_ENDPOINT")
  if not endpoint or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3"):
    return {}
  if "://" not in endpoint:
    https = os.environ.get("S3_USE_HTTPS", "1") not in ("0", "false", "False")
    endpoint = f"{'https' if https else 'http'}://{endpoint}"
  return {"client_kwargs": {"endpoint_url": endpoint}}


def _fsspec(path: str):
  """The fsspec filesystem of a path TensorFlow does not serve."""
  import fsspec  # pylint: disable=g-import-not-at-top  (only remote runs pay its import)
  scheme = scheme_of(path)
  try:
    filesystem = fsspec.filesystem(scheme, **_storage_options(scheme))
  except (ImportError, ValueError) as error:
    raise DataError(f"{path!r}: no installed filesystem serves {scheme}:// ({error}).") from None
  return filesystem


def ensure_filesystem(path: str) -> None:
  """Raises DataError unless some installed filesystem serves `path`'s scheme."""
  if not is_tf_native(path):
    _fsspec(path)


# ------------------------------------------------------------------------------------------------
# tf.io.gfile's functions, for every scheme.


def exists(path: str) -> bool:
  if is_tf_native(path):
    return tf.io.gfile.exists(path)
  filesystem = _fsspec(path)
  return filesystem.exists(path)


def isdir(path: str) -> bool:
  if is_tf_native(path):
    return tf.io.gfile.isdir(path)
  filesystem = _fsspec(path)
  return filesystem.isdir(path)


def listdir(path: str) -> List[str]:
  """The names (not paths) in a directory, like tf.io.gfile.listdir."""
  if is_tf_native(path):
    return tf.io.gfile.listdir(path)
  filesystem = _fsspec(path)
  if not filesystem.isdir(path):
    raise tf.errors.NotFoundError(None, None, f"{path} is not a directory")
  return [entry.rstrip("/").rsplit("/", 1)[-1] for entry in filesystem.ls(path, detail=False)]


def glob(pattern: str) -> List[str]:
  if is_tf_native(pattern):
    return tf.io.gfile.glob(pattern)
  filesystem = _fsspec(pattern)
  prefix = scheme_of(pattern) + "://"
  return sorted(p if "://" in p else prefix + p for p in filesystem.glob(pattern))


def makedirs(path: str) -> None:
  if is_tf_native(path):
    tf.io.gfile.makedirs(path)
    return
  filesystem = _fsspec(path)
  # Object stores have no directories; this is a no-op there.
  filesystem.makedirs(path, exist_ok=True)


def GFile(path: str, mode: str = "r"):  # pylint: disable=invalid-name  (tf.io.gfile's name)
  """An open file object, like tf.io.gfile.GFile (a context manager)."""
  if is_tf_native(path):
    return tf.io.gfile.GFile(path, mode)
  filesystem = _fsspec(path)
  return filesystem.open(path, mode)


def read_bytes(path) -> bytes:
  """The contents of a file; `path` may be a str or bytes (as tf.numpy_function passes it)."""
  if isinstance(path, bytes):
    path = path.decode()
  with GFile(path, "rb") as f:
    return f.read()


def remove(path: str) -> None:
  if is_tf_native(path):
    tf.io.gfile.remove(path)
    return
  filesystem = _fsspec(path)
  filesystem.rm_file(path)


def rmtree(path: str) -> None:
  if is_tf_native(path):
    tf.io.gfile.rmtree(path)
    return
  filesystem = _fsspec(path)
  filesystem.rm(path, recursive=True)


def rename(source: str, destination: str, overwrite: bool = False) -> None:
  if is_tf_native(source) and is_tf_native(destination):
    tf.io.gfile.rename(source, destination, overwrite=overwrite)
    return
  filesystem = _fsspec(source)
  if not overwrite and filesystem.exists(destination):
    raise tf.errors.AlreadyExistsError(None, None, f"{destination} exists")
  filesystem.mv(source, destination, recursive=filesystem.isdir(source))


def copy(source: str, destination: str, overwrite: bool = False) -> None:
  if is_tf_native(source) and is_tf_native(destination):
    tf.io.gfile.copy(source, destination, overwrite=overwrite)
    return
  if not overwrite and exists(destination):
    raise tf.errors.AlreadyExistsError(None, None, f"{destination} exists")
  if not is_tf_native(destination) and not is_remote(source):
    filesystem = _fsspec(destination)
    filesystem.put_file(source, destination)
    return
  with GFile(source, "rb") as reader, GFile(destination, "wb") as writer:
    shutil.copyfileobj(reader, writer, 1 << 20)


def read_file_op(path: tf.Tensor, native: bool) -> tf.Tensor:
  """tf.io.read_file, for every scheme: a path TensorFlow does not serve is read on the host.

  Args:
    path: scalar string tensor.
    native: whether TensorFlow serves the path's scheme (decided once, in Python, by the
      caller, so local runs keep TensorFlow's own op in their graphs).
  """
  if native:
    return tf.io.read_file(path)
  contents = tf.numpy_function(read_bytes, [path], tf.string, stateful=False)
  contents.set_shape([])
  return contents


# ------------------------------------------------------------------------------------------------
# Local mirrors of remote directories, for TensorFlow's own readers and writers.

# {local folder: its _Mirror}, for sync_mirrors.
_MIRRORS: Dict[str, "_Mirror"] = {}
_MIRRORS_LOCK = threading.Lock()


def _download(remote: str, local: str) -> None:
  filesystem = _fsspec(remote)
  if not filesystem.exists(remote):
    return
  root = remote.rstrip("/").split("://", 1)[-1]
  for path in filesystem.find(remote):
    relative = path.split("://", 1)[-1][len(root):].lstrip("/")
    target = os.path.join(local, relative)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    filesystem.get_file(path, target)


def _local_files(local: str) -> Dict[str, Tuple[int, int]]:
  files = {}
  for folder, _, names in os.walk(local):
    for name in names:
      path = os.path.join(folder, name)
      stat = os.stat(path)
      files[os.path.relpath(path, local)] = (stat.st_size, stat.st_mtime_ns)
  return files


class _Mirror:
  """A local directory whose changes are uploaded to a remote one (changed files, deletions)."""

  def __init__(self, remote: str, local: str):
    self.remote = remote.rstrip("/")
    self.local = local
    _download(self.remote, local)
    self._uploaded = _local_files(local)

  def sync(self) -> None:
    filesystem = _fsspec(self.remote)
    now = _local_files(self.local)
    for relative, signature in sorted(now.items()):
      if self._uploaded.get(relative) != signature:
        filesystem.put_file(os.path.join(self.local, relative), f"{self.remote}/{relative}")
    for relative in sorted(set(self._uploaded) - set(now)):
      try:
        filesystem.rm_file(f"{self.remote}/{relative}")
      except FileNotFoundError:
        pass
    self._uploaded = now


@contextlib.contextmanager
def mirrored(path: Optional[str]) -> Iterator[Optional[str]]:
  """A directory TensorFlow can use in place of `path`: `path` itself, or a local mirror.

  For a scheme TensorFlow does not serve (s3://, ...), the remote directory's files are
  downloaded into a fresh local folder, which the block uses instead; every change (new and
  changed files, deletions) is uploaded by sync_mirrors() and when the block ends, even by an
  exception, and the folder is then removed.

  Args:
    path: a directory (need not exist yet), or None/"" (yielded unchanged).
  """
  if not path or is_tf_native(path):
    yield path
    return
  local = tempfile.mkdtemp(prefix="daml_tf-mirror-")
  try:
    mirror = _Mirror(path, local)
    with _MIRRORS_LOCK:
      _MIRRORS[local] = mirror
    logging.info("%s is worked on in the local mirror %s (uploaded after every checkpoint and "
                 "at the end)", path, local)
    try:
      yield local
    finally:
      with _MIRRORS_LOCK:
        _MIRRORS.pop(local, None)
      mirror.sync()
  finally:
    shutil.rmtree(local, ignore_errors=True)


def sync_mirrors() -> None:
  """Uploads the changes of every open local mirror (after a checkpoint, for example)."""
  with _MIRRORS_LOCK:
    mirrors = list(_MIRRORS.values())
  for mirror in mirrors:
    mirror.sync()


# Marks a temporary sibling; cleaners (data.tfrecord) recognise their own by it.
TMP_MARK = ".tmp-"


def write_atomically(path: str, write: Callable[[str], None], directory: bool = False) -> str:
  """Calls write(temporary path) on a temporary sibling of `path`, then renames it to `path`.

  A rename is atomic on local and POSIX file systems, so a reader (TF Serving looking for the
  newest version, a resumed conversion) sees nothing or everything. Object stores (gs://,
  s3://) cannot rename a directory: there a directory is written in place. A file replaces an
  existing one; a directory must not exist yet.

  Args:
    path: the file or directory to write (any path this module serves).
    write: writes the complete file or directory at the path it is given.
    directory: whether `path` is a directory.

  Returns:
    path.
  """
  parent = os.path.dirname(path.rstrip("/"))
  if parent:
    makedirs(parent)
  # An object store can rename nothing atomically, but writes an object in one piece.
  if "://" in path and (directory or not is_tf_native(path)):
    write(path)
    return path
  # The mark makes the name non-numeric too, so TF Serving ignores a version being written.
  temporary = f"{path.rstrip('/')}{TMP_MARK}{uuid.uuid4().hex[:8]}"
  try:
    write(temporary)
    rename(temporary, path, overwrite=not directory)
  finally:
    if exists(temporary):
      if isdir(temporary):
        rmtree(temporary)
      else:
        remove(temporary)
  return path


def write_bytes_atomically(path: str, contents: bytes) -> str:
  """Writes `contents` to the file `path` atomically (see write_atomically)."""

  def write(temporary):
    with GFile(temporary, "wb") as f:
      f.write(contents)

  return write_atomically(path, write)
