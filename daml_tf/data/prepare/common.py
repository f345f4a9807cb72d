"""What every release converter shares: the release formats, expected counts, finding files,
and the frame writers (each writes a video's frames as 000.<ext>, 001.<ext>, ... into a folder
and returns how many it wrote)."""

import dataclasses
import os
import re
import shutil
from typing import Callable, List, Optional, Sequence, Tuple

from PIL import Image

from daml_tf import fileio
from daml_tf.data import video_io
from daml_tf.data import layout
from daml_tf.data import registry
from daml_tf.errors import DataError

# Converters of the official releases (ReleaseFormat.kind).
KIND_UCSD = "ucsd"
KIND_AVENUE = "avenue"
KIND_SHANGHAITECH = "shanghaitech"

JPEG_QUALITY = 95
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".mkv")


@dataclasses.dataclass(frozen=True)
class ReleaseFormat:
  """How a dataset's official download is laid out.

  Attributes:
    kind: the converter, one of the KIND_* constants.
    release_dirs: folders of --source that may hold the release root (the download's
      top-level folder); --source may also be the release root itself.
    marker: path, relative to the release root, whose presence identifies it.
    ground_truth: candidate paths of the frame-level ground truth, relative to the release
      root, then to --source (the first that exists is used).
    num_train_videos: expected number of training videos (None: not checked).
    num_train_frames: expected total number of training frames (None: not checked).
  """

  kind: str
  release_dirs: Tuple[str, ...]
  marker: str
  ground_truth: Tuple[str, ...]
  num_train_videos: Optional[int] = None
  num_train_frames: Optional[int] = None


# Keyed by registry name; the registry's own fields (test counts, label file and format) are
# read from the spec, not repeated here.
RELEASE_FORMATS = {
    "ped1": ReleaseFormat(
        kind=KIND_UCSD, release_dirs=("UCSDped1",), marker="Train",
        ground_truth=("Test/UCSDped1.m", "UCSDped1.m"), num_train_videos=34,
        num_train_frames=6800),
    "ped2": ReleaseFormat(
        kind=KIND_UCSD, release_dirs=("UCSDped2",), marker="Train",
        ground_truth=("Test/UCSDped2.m", "UCSDped2.m"), num_train_videos=16,
        num_train_frames=2550),
    "avenue": ReleaseFormat(
        kind=KIND_AVENUE, release_dirs=("Avenue Dataset", "Avenue_Dataset", "avenue"),
        marker="training_videos",
        ground_truth=("testing_label_mask", "ground_truth_demo/testing_label_mask"),
        num_train_videos=16, num_train_frames=15328),
    # The paper's training frame count is not what every decoder yields from the AVIs, so only
    # the video count is checked.
    "shanghaitech": ReleaseFormat(
        kind=KIND_SHANGHAITECH, release_dirs=("shanghaitech", "ShanghaiTech"),
        marker="training/videos", ground_truth=("testing/test_frame_mask",),
        num_train_videos=330),
}


@dataclasses.dataclass(frozen=True)
class ExpectedCounts:
  """Video and frame counts a prepared dataset must have; None leaves a count unchecked."""

  train_videos: Optional[int] = None
  train_frames: Optional[int] = None
  test_videos: Optional[int] = None
  test_frames: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class Summary:
  """What a verified dataset holds.

  Attributes:
    root: the dataset root.
    label_file: the label file the test videos were checked against.
    train_videos, train_frames, test_videos, test_frames: counts found on disk.
    anomalous_frames: test frames labelled 1.
  """

  root: str
  label_file: str
  train_videos: int
  train_frames: int
  test_videos: int
  test_frames: int
  anomalous_frames: int


def release_format(dataset: str) -> ReleaseFormat:
  """The release format of a registry dataset; DataError for one without an official release."""
  registry.get_spec(dataset)  # UnknownDatasetError for names outside the registry.
  try:
    return RELEASE_FORMATS[dataset]
  except KeyError:
    raise DataError(
        f"Dataset {dataset!r} has no official release to prepare; datasets with one: "
        f"{', '.join(sorted(RELEASE_FORMATS))}.") from None


def default_expected_counts(dataset: str) -> ExpectedCounts:
  """The counts of the full official release: test counts from the registry spec, training
  counts from RELEASE_FORMATS (unchecked for datasets without a release format)."""
  spec = registry.get_spec(dataset)
  release = RELEASE_FORMATS.get(dataset)
  return ExpectedCounts(
      train_videos=release.num_train_videos if release else None,
      train_frames=release.num_train_frames if release else None,
      test_videos=spec.num_test_videos, test_frames=spec.num_test_frames)


def is_visible(name: str) -> bool:
  # ".DS_Store", and "._001.tif" AppleDouble files that macOS archives add beside every file.
  return not name.startswith(".")


def list_entries(folder: str, extensions: Sequence[str] = (), dirs: bool = False) -> List[str]:
  """Visible entries of folder in natural order: folders if dirs, else files with extensions."""
  if not os.path.isdir(folder):
    raise DataError(f"Missing folder {folder!r}.")
  names = []
  for name in os.listdir(folder):
    path = os.path.join(folder, name)
    if not is_visible(name) or os.path.isdir(path) != dirs:
      continue
    if not dirs and not name.lower().endswith(tuple(extensions)):
      continue
    names.append(name)
  return sorted(names, key=layout.natural_key)


def is_frames_layout(folder: str) -> bool:
  return all(os.path.isdir(os.path.join(folder, split, layout.FRAMES_DIR))
             for split in layout.SPLITS)


def find_release_root(source: str, release: ReleaseFormat, dataset: str) -> str:
  candidates = [source] + [os.path.join(source, d) for d in release.release_dirs]
  for candidate in candidates:
    if os.path.exists(os.path.join(candidate, release.marker)):
      return candidate
  raise DataError(
      f"{source!r} is not an official {dataset!r} download: none of "
      f"{', '.join(repr(os.path.join(c, release.marker)) for c in candidates)} exists.")


def find_ground_truth(root: str, source: str, release: ReleaseFormat) -> str:
  candidates = [os.path.join(base, p) for base in (root, source) for p in release.ground_truth]
  for candidate in candidates:
    if os.path.exists(candidate):
      return candidate
  raise DataError(f"No ground truth found: looked for {', '.join(map(repr, candidates))}.")


def video_number(name: str, path: str) -> int:
  """The number in a release's video or file name ("Train001" -> 1, "7_label.mat" -> 7)."""
  match = re.search(r"\d+", name)
  if not match:
    raise DataError(f"Cannot tell the video number of {path!r}: its name has no digits.")
  return int(match.group())


@dataclasses.dataclass(frozen=True)
class VideoJob:
  """One output video.

  Attributes:
    split: "training" or "testing".
    name: output video name.
    source: the release file or folder it comes from (for messages).
    write: writes the frames into a given (empty) folder and returns their number.
    num_frames: frame count known without decoding (frame-file sources), else None.
  """

  split: str
  name: str
  source: str
  write: Callable[[str], int]
  num_frames: Optional[int] = None


def frame_name(index: int, extension: str) -> str:
  return f"{index:03d}{extension}"


def copy_frames(paths: Sequence[str]) -> Callable[[str], int]:
  def write(folder: str) -> int:
    for i, path in enumerate(paths):
      extension = os.path.splitext(path)[1].lower()
      shutil.copyfile(path, os.path.join(folder, frame_name(i, extension)))
    return len(paths)

  return write


def video_to_jpeg(path: str) -> Callable[[str], int]:
  def write(folder: str) -> int:
    count = 0
    try:
      for count, _, frame in video_io.iter_video(path, check_length=False, threads=True):
        Image.fromarray(frame).save(os.path.join(folder, frame_name(count, ".jpg")),
                                    quality=JPEG_QUALITY)
        count += 1
    except video_io.CannotOpen as e:
      raise DataError(f"Cannot open video {path!r}: {e.reason}") from e
    except video_io.DecodeStopped as e:
      raise DataError(f"Cannot decode video {path!r} at frame {e.index} (0-based; the {e.index} "
                      f"frames before it decoded): {e.reason}") from e
    if not count:
      raise DataError(f"Video {path!r} has no decodable frames.")
    return count

  return write


def video_jobs(split: str, folder: str) -> List[VideoJob]:
  names = list_entries(folder, VIDEO_EXTENSIONS)
  if not names:
    raise DataError(f"Folder {folder!r} holds no video files ({', '.join(VIDEO_EXTENSIONS)}).")
  return [VideoJob(split=split, name=os.path.splitext(n)[0], source=os.path.join(folder, n),
                    write=video_to_jpeg(os.path.join(folder, n))) for n in names]


def atomic_save(path: str, save: Callable) -> None:
  """Calls save(file object) on a temporary file and renames it to path when complete."""

  def write(temporary):
    with open(temporary, "wb") as f:
      save(f)

  fileio.write_atomically(path, write)
