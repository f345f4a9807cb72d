"""Frame-level ground truth of the test videos (1 = anomalous frame).

The formats are named by the LABELS_* constants of daml_tf.data.registry and documented in
/work/shared/datasets/labels/README.md. Every loader returns one uint8 0/1 array per test video,
in the order of the videos it is given, and checks the arrays against the frames on disk.
"""

import io
import os
from typing import Dict, List, Sequence

from absl import logging
import numpy as np
import scipy.io

from daml_tf import fileio
from daml_tf.data import registry
from daml_tf.data.layout import Video, natural_key
from daml_tf.errors import DataError

PACKAGED_LABELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "labels")


def find_label_file(spec, root: str, override: str = "") -> str:
  """Finds the label file of a dataset.

  Args:
    spec: the dataset's registry.DatasetSpec.
    root: the dataset root.
    override: a label file (or, for the numpy format, a folder of <video>.npy) to use instead.

  Returns:
    The override if set, else `<root>/<spec.label_file>` if it exists, else the packaged
    `daml_tf/data/labels/<spec.label_file>`.

  Raises:
    DataError: the override does not exist, or no label file was found.
  """
  if override:
    fileio.ensure_filesystem(override)
    if not fileio.exists(override):
      raise DataError(f"Label file {override!r} (--label_file) does not exist.")
    return override
  candidates = [os.path.join(root, spec.label_file),
                os.path.join(PACKAGED_LABELS_DIR, spec.label_file)]
  for path in candidates:
    if fileio.exists(path):
      return path
  raise DataError(
      f"No label file for dataset {spec.name!r}: looked for {' and '.join(candidates)}. "
      f"Evaluation needs the frame labels of the test videos; set --label_file"
      + (" (a .npz of one 0/1 array per test video, keyed by its folder name)."
         if spec.label_format == registry.LABELS_NUMPY else "."))


def _read_bytes(path: str) -> io.BytesIO:
  with fileio.GFile(path, "rb") as f:
    return io.BytesIO(f.read())


def _loadmat(path: str) -> Dict[str, np.ndarray]:
  try:
    contents = scipy.io.loadmat(_read_bytes(path))
  except (ValueError, TypeError, NotImplementedError, OSError) as e:
    # NotImplementedError: MATLAB v7.3 (HDF5) files, which scipy cannot read.
    raise DataError(f"Cannot read label file {path!r} as a MATLAB file: {e}") from e
  return {k: v for k, v in contents.items() if not k.startswith("__")}


def _check_count(path: str, num_labels: int, videos: Sequence[Video]) -> None:
  if num_labels != len(videos):
    raise DataError(
        f"Label file {path!r} has labels for {num_labels} videos but there are "
        f"{len(videos)} test videos ({', '.join(v.name for v in videos[:5])}"
        f"{', ...' if len(videos) > 5 else ''}).")


def _as_frame_labels(path: str, video: Video, values) -> np.ndarray:
  labels = np.asarray(values).ravel()
  if labels.size != video.num_frames:
    raise DataError(
        f"Label file {path!r}: video {video.name} has {labels.size} frame labels but "
        f"{video.num_frames} frames.")
  return (labels != 0).astype(np.uint8)


def _match_keys(path: str, keys: Sequence[str], videos: Sequence[Video]) -> List[str]:
  """The label key of each video: by name if every video has one, else by natural order."""
  _check_count(path, len(keys), videos)
  if all(v.name in keys for v in videos):
    return [v.name for v in videos]
  ordered = sorted(keys, key=natural_key)
  logging.info("Label file %s: keys do not match the video names; pairing them in order "
               "(%s -> %s, ...).", path, ordered[0], videos[0].name)
  return ordered


def _ucsd_intervals(path: str, videos: Sequence[Video]) -> List[np.ndarray]:
  contents = _loadmat(path)
  if "gt" not in contents:
    raise DataError(f"Label file {path!r} has no `gt` variable (found: {sorted(contents)}).")
  cells = np.asarray(contents["gt"], dtype=object).ravel()
  _check_count(path, cells.size, videos)
  result = []
  for video, cell in zip(videos, cells):
    # int64: the .mat stores uint8 for short videos, whose arithmetic would wrap.
    intervals = np.asarray(cell, dtype=np.int64)
    if intervals.size == 0:
      intervals = np.zeros((2, 0), np.int64)
    elif intervals.ndim == 1 and intervals.size == 2:
      intervals = intervals.reshape(2, 1)
    if intervals.ndim != 2 or intervals.shape[0] != 2:
      raise DataError(
          f"Label file {path!r}: video {video.name} has intervals of shape {intervals.shape}, "
          f"expected 2xK [start; end].")
    labels = np.zeros(video.num_frames, np.uint8)
    for start, end in intervals.T:
      if not 1 <= start <= end <= video.num_frames:
        raise DataError(
            f"Label file {path!r}: video {video.name} has the interval [{start}, {end}] "
            f"(1-based, inclusive) outside its {video.num_frames} frames.")
      labels[start - 1:end] = 1
    result.append(labels)
  return result


def _per_video_mat(path: str, videos: Sequence[Video]) -> List[np.ndarray]:
  contents = _loadmat(path)
  keys = _match_keys(path, list(contents), videos)
  return [_as_frame_labels(path, v, contents[k]) for v, k in zip(videos, keys)]


def _numpy(path: str, videos: Sequence[Video]) -> List[np.ndarray]:
  if fileio.isdir(path):
    result = []
    for video in videos:
      file = os.path.join(path, video.name + ".npy")
      if not fileio.exists(file):
        raise DataError(f"Label folder {path!r} has no {video.name}.npy for test video "
                        f"{video.name}.")
      result.append(_as_frame_labels(file, video, np.load(_read_bytes(file))))
    return result
  try:
    archive = np.load(_read_bytes(path))
  except (ValueError, OSError) as e:
    raise DataError(f"Cannot read label file {path!r} as a NumPy .npz: {e}") from e
  if not isinstance(archive, np.lib.npyio.NpzFile):
    raise DataError(f"Label file {path!r} is a single array, expected an .npz keyed by "
                    f"video name.")
  with archive:
    keys = _match_keys(path, list(archive.files), videos)
    return [_as_frame_labels(path, v, archive[k]) for v, k in zip(videos, keys)]


_LOADERS = {
    registry.LABELS_UCSD_INTERVALS: _ucsd_intervals,
    registry.LABELS_PER_VIDEO_MAT: _per_video_mat,
    registry.LABELS_NUMPY: _numpy,
}


def load_labels(path: str, label_format: str, videos: Sequence[Video]) -> List[np.ndarray]:
  """Reads the frame labels of the test videos.

  Args:
    path: the label file (see find_label_file).
    label_format: one of the registry.LABELS_* constants.
    videos: the test videos, in the order the labels are wanted.

  Returns:
    One uint8 array of 0/1 per video, as long as the video.

  Raises:
    DataError: naming the label file (and the video) when the file cannot be read, covers a
      different number of videos, or a video's labels do not fit its frame count.
    ValueError: label_format is unknown.
  """
  try:
    loader = _LOADERS[label_format]
  except KeyError:
    raise ValueError(f"Unknown label format {label_format!r}; known: "
                     f"{', '.join(sorted(_LOADERS))}.") from None
  labels = loader(path, videos)
  logging.info("Labels %s: %d videos, %d frames, %d anomalous.", path, len(labels),
               sum(l.size for l in labels), sum(int(l.sum()) for l in labels))
  return labels
