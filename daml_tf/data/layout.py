"""The common frames layout: finding the dataset root, its videos and their frames.

    <root>/training/frames/<video>/<frame>.<jpg|png|tif|...>
    <root>/testing/frames/<video>/<frame>.<jpg|png|tif|...>

Videos and frames are taken in natural order ("2" < "10"), which is the order frame labels use.
Listing goes through daml_tf.fileio so that roots on remote filesystems work the same way.
"""

import dataclasses
import math
import os
import re
from typing import List, Sequence, Tuple

from absl import logging

from daml_tf import fileio
from daml_tf.data import registry
from daml_tf.errors import DataError

SPLITS = ("training", "testing")
FRAMES_DIR = "frames"


@dataclasses.dataclass(frozen=True)
class Video:
  """One video of the frames layout.

  Attributes:
    name: the video's folder name (e.g. "01", "01_0014").
    frame_paths: paths of its frames, in natural order.
  """

  name: str
  frame_paths: Tuple[str, ...]

  @property
  def num_frames(self) -> int:
    return len(self.frame_paths)


def natural_key(name: str) -> Tuple:
  """Sort key that orders digit runs by value: "2" < "10", "frame9" < "frame10".

  Args:
    name: a file or folder name.

  Returns:
    A tuple usable as a sort key; the name itself breaks ties ("01" vs "1").
  """
  # re.split with a capturing group alternates text and digits, starting with text, so the
  # tuple positions always hold the same type and never compare str with int.
  parts = re.split(r"(\d+)", name)
  return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)) + (name,)


def _listdir(path: str) -> List[str]:
  # Some filesystems (GCS) mark directories with a trailing slash.
  return [entry.rstrip("/") for entry in fileio.listdir(path)]


def _has_split(folder: str) -> bool:
  return any(fileio.isdir(os.path.join(folder, split)) for split in SPLITS)


def resolve_dataset_root(data_dir: str, spec) -> str:
  """Finds the dataset root: the folder holding training/ and/or testing/.

  Args:
    data_dir: either the dataset root itself or a folder holding `<spec.name>/`.
    spec: the dataset's registry.DatasetSpec.

  Returns:
    The dataset root.

  Raises:
    DataError: data_dir is empty or missing, or neither it nor `<data_dir>/<spec.name>`
      holds a training/ or testing/ folder.
  """
  if not data_dir:
    raise DataError(
        f"No data directory given for dataset {spec.name!r}: set --data_dir to the dataset "
        f"root (holding training/ and testing/) or to a folder holding {spec.name}/.")
  fileio.ensure_filesystem(data_dir)
  if not fileio.isdir(data_dir):
    raise DataError(f"Data directory {data_dir!r} does not exist or is not a folder.")
  if _has_split(data_dir):
    return data_dir
  nested = os.path.join(data_dir, spec.name)
  if fileio.isdir(nested) and _has_split(nested):
    return nested
  raise DataError(
      f"Data directory {data_dir!r} is not a {spec.name!r} dataset root: neither it nor "
      f"{nested!r} contains a training/ or testing/ folder.")


def list_videos(root: str, split: str, spec) -> List[Video]:
  """Lists the videos of one split, each with its frames in natural order.

  Args:
    root: the dataset root (see resolve_dataset_root).
    split: "training" or "testing".
    spec: the dataset's registry.DatasetSpec (its frame_extensions select the frames).

  Returns:
    The videos in natural order of their folder names.

  Raises:
    DataError: the split folder is missing or holds no video folders, or a video folder holds
      no frames.
    ValueError: split is not one of SPLITS.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  split_dir = os.path.join(root, split, FRAMES_DIR)
  if not fileio.isdir(split_dir):
    raise DataError(f"Missing folder {split_dir!r} (expected {split}/{FRAMES_DIR}/<video>/).")
  names = sorted((n for n in _listdir(split_dir)
                  if fileio.isdir(os.path.join(split_dir, n))), key=natural_key)
  if not names:
    raise DataError(f"Folder {split_dir!r} holds no video folders.")
  extensions = tuple(e.lower() for e in spec.frame_extensions)
  videos = []
  for name in names:
    video_dir = os.path.join(split_dir, name)
    frames = sorted((f for f in _listdir(video_dir) if f.lower().endswith(extensions)),
                    key=natural_key)
    if not frames:
      raise DataError(
          f"Video folder {video_dir!r} holds no frames with an extension in "
          f"{', '.join(spec.frame_extensions)}.")
    videos.append(Video(name=name, frame_paths=tuple(os.path.join(video_dir, f)
                                                     for f in frames)))
  return videos


def find_videos(dataset: str, data_dir: str, split: str) -> Tuple[str, List[Video]]:
  """The root and the videos of one split of a registered dataset under `data_dir`.

  Raises:
    UnknownDatasetError: dataset is not in the registry.
    DataError: no dataset root or no videos there.
  """
  spec = registry.get_spec(dataset)
  root = resolve_dataset_root(data_dir, spec)
  return root, list_videos(root, split, spec)


def check_clip_length(videos: Sequence[Video], clip_span: int) -> None:
  """Checks every video is long enough for at least one clip.

  Args:
    videos: the videos clips are cut from.
    clip_span: frames from a clip's first input to its target (DataConfig.clip_span).

  Raises:
    DataError: naming every video with fewer than clip_span + 1 frames.
  """
  short = [v for v in videos if v.num_frames < clip_span + 1]
  if short:
    listing = ", ".join(f"{v.name} ({v.num_frames} frames)" for v in short)
    raise DataError(
        f"{len(short)} video(s) have fewer than {clip_span + 1} frames, the length of one clip "
        f"(clip span {clip_span}; lower --time_steps, --interval or --delta): {listing}.")


def split_holdout(videos: Sequence[Video], fraction: float, clip_span: int
                  ) -> Tuple[List[Video], List[Video]]:
  """Splits every video into a training head and a held-out tail of about `fraction`.

  A tail must hold at least one scorable clip (clip_span + 1 frames) and the head must keep
  one too; a video too short for both stays whole in training.

  Args:
    videos: the training videos.
    fraction: share of each video's frames to hold out, in [0, 1).
    clip_span: frames from a clip's first input to its target.

  Returns:
    (training videos, held-out videos); the held-out list is empty when fraction is 0. Held-out
    tails are named "<video>:holdout".
  """
  if not fraction:
    return list(videos), []
  heads, tails = [], []
  minimum = clip_span + 1
  for video in videos:
    held = max(math.ceil(fraction * video.num_frames), minimum)
    if video.num_frames - held < minimum:
      heads.append(video)
      continue
    cut = video.num_frames - held
    heads.append(Video(video.name, video.frame_paths[:cut]))
    tails.append(Video(f"{video.name}:holdout", video.frame_paths[cut:]))
  if not tails:
    logging.warning("No training video is long enough to hold out %.0f%% of it (each needs "
                    "2 x %d frames); the threshold will come from training frames.",
                    100 * fraction, minimum)
  else:
    logging.info("Holding out %d of %d training frames (the end of %d videos) for threshold "
                 "calibration.", sum(v.num_frames for v in tails),
                 sum(v.num_frames for v in videos), len(tails))
  return heads, tails
