"""Converts an official benchmark download into the common frames layout and checks it.

  python -m daml_tf.data.prepare --dataset=ped2 --source=DOWNLOAD --output_dir=DIR

(DOWNLOAD: the unpacked official download, e.g. UCSD_Anomaly_Dataset.v1p2/) writes

  <output_dir>/training/frames/<video>/000.<png|jpg> ...
  <output_dir>/testing/frames/<video>/000.<png|jpg> ...
  <output_dir>/<spec.label_file>       in the format the registry declares for the dataset

and then verifies video and frame counts against the dataset's expected counts and every test
video's frame count against its labels. What each release looks like and how it is converted:

  ped1, ped2    <source>[/UCSDpedN]/Train/Train001/001.tif, Test/Test001/..., Test/UCSDpedN.m.
                TIFFs are decoded with tensorflow-io (the decoder the pipeline would use on them)
                and written as lossless PNG: identical pixels, fewer bytes (the UCSD TIFFs are
                uncompressed), and read by TensorFlow's core decoder, so training needs no
                tensorflow-io ops and none of their per-file overhead. Train001 -> 01.
                The `gt{i} = [a:b, c:d];` lines of UCSDpedN.m become the `gt` cell of the .mat.
                `*_gt` folders (pixel masks) and non-TIFF files are ignored.
  avenue        <source>[/Avenue Dataset]/training_videos/01.avi, testing_videos/01.avi,
                testing_label_mask/1_label.mat (also looked for under ground_truth_demo/).
                Videos are decoded with PyAV and written as JPEG (quality 95: the source is
                already lossy, PNG would be several times larger for no visible gain). A frame is
                anomalous when its `volLabel` mask has any pixel set; keys 01..21.
  shanghaitech  <source>[/shanghaitech]/training/videos/01_001.avi (decoded as Avenue's),
                testing/frames/01_0014/000.jpg (copied byte for byte, renumbered in natural
                order), testing/test_frame_mask/01_0014.npy (collected into one .npz).

A source that already is in the frames layout (training/frames and testing/frames) needs no
preparation: it is verified in place and nothing is written (point --data_dir at it).

Re-running is cheap and safe: each video is written into `<output_dir>/.prepare_tmp/` and renamed
into place when complete, and the label file likewise, so an existing video folder or label file
is complete and is kept (a folder whose frame count differs from a frame-file source is redone).
A run that finds everything in place writes nothing. Only local filesystems are supported for
writing. Library code calls `prepare` or `verify`; the entry point is `main` after
`define_flags`.
"""

import dataclasses
import os
import re
import shutil
from typing import Callable, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging
import numpy as np
from PIL import Image
import scipy.io

from daml_tf import cli
from daml_tf import fileio
from daml_tf import progress as progress_lib
from daml_tf import video_io
from daml_tf.data import labels as labels_lib
from daml_tf.data import layout
from daml_tf.data import registry
from daml_tf.data.layout import DataError

# Converters of the official releases (ReleaseFormat.kind).
KIND_UCSD = "ucsd"
KIND_AVENUE = "avenue"
KIND_SHANGHAITECH = "shanghaitech"

JPEG_QUALITY = 95
TMP_DIR = ".prepare_tmp"
_VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".mkv")


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


# ------------------------------------------------------------------------------------------------
# Verification.


def verify(root: str, dataset: str, expected: Optional[ExpectedCounts] = None,
           check_counts: bool = True, label_file: str = "") -> Summary:
  """Checks a frames-layout dataset: counts and labels.

  Args:
    root: the dataset root (holding training/frames and testing/frames).
    dataset: registry name.
    expected: counts to require; None: default_expected_counts(dataset).
    check_counts: False skips the count check (the labels are still checked).
    label_file: the label file; empty: `<root>/<spec.label_file>`, else the packaged one.

  Returns:
    A Summary of the dataset.

  Raises:
    DataError: a split is missing or empty, a count differs from the expected one (the message
      lists every difference), or the labels do not fit the test videos (naming the video).
  """
  spec = registry.get_spec(dataset)
  train = layout.list_videos(root, "training", spec)
  test = layout.list_videos(root, "testing", spec)
  found = ExpectedCounts(
      train_videos=len(train), train_frames=sum(v.num_frames for v in train),
      test_videos=len(test), test_frames=sum(v.num_frames for v in test))
  if check_counts:
    expected = default_expected_counts(dataset) if expected is None else expected
    differences = [
        f"{field.name.replace('_', ' ')}: expected {getattr(expected, field.name)}, found "
        f"{getattr(found, field.name)}"
        for field in dataclasses.fields(ExpectedCounts)
        if getattr(expected, field.name) is not None
        and getattr(expected, field.name) != getattr(found, field.name)]
    if differences:
      raise DataError(
          f"Dataset {root!r} does not have the counts of {dataset!r}: "
          f"{'; '.join(differences)}. An incomplete or different download? (Library callers "
          f"can pass other expected counts; the command line has --nocheck_counts.)")
  label_path = labels_lib.find_label_file(spec, root, label_file)
  frame_labels = labels_lib.load_labels(label_path, spec.label_format, test)
  summary = Summary(
      root=root, label_file=label_path, train_videos=found.train_videos,
      train_frames=found.train_frames, test_videos=found.test_videos,
      test_frames=found.test_frames,
      anomalous_frames=int(sum(int(l.sum()) for l in frame_labels)))
  logging.info("Verified %s: %d training videos (%d frames), %d test videos (%d frames, %d "
               "anomalous), labels %s.", root, summary.train_videos, summary.train_frames,
               summary.test_videos, summary.test_frames, summary.anomalous_frames, label_path)
  return summary


# ------------------------------------------------------------------------------------------------
# Finding files of a release.


def _is_visible(name: str) -> bool:
  # ".DS_Store", and "._001.tif" AppleDouble files that macOS archives add beside every file.
  return not name.startswith(".")


def _list(folder: str, extensions: Sequence[str] = (), dirs: bool = False) -> List[str]:
  """Visible entries of folder in natural order: folders if dirs, else files with extensions."""
  if not os.path.isdir(folder):
    raise DataError(f"Missing folder {folder!r}.")
  names = []
  for name in os.listdir(folder):
    path = os.path.join(folder, name)
    if not _is_visible(name) or os.path.isdir(path) != dirs:
      continue
    if not dirs and not name.lower().endswith(tuple(extensions)):
      continue
    names.append(name)
  return sorted(names, key=layout.natural_key)


def _is_frames_layout(folder: str) -> bool:
  return all(os.path.isdir(os.path.join(folder, split, layout.FRAMES_DIR))
             for split in layout.SPLITS)


def _find_release_root(source: str, release: ReleaseFormat, dataset: str) -> str:
  candidates = [source] + [os.path.join(source, d) for d in release.release_dirs]
  for candidate in candidates:
    if os.path.exists(os.path.join(candidate, release.marker)):
      return candidate
  raise DataError(
      f"{source!r} is not an official {dataset!r} download: none of "
      f"{', '.join(repr(os.path.join(c, release.marker)) for c in candidates)} exists.")


def _find_ground_truth(root: str, source: str, release: ReleaseFormat) -> str:
  candidates = [os.path.join(base, p) for base in (root, source) for p in release.ground_truth]
  for candidate in candidates:
    if os.path.exists(candidate):
      return candidate
  raise DataError(f"No ground truth found: looked for {', '.join(map(repr, candidates))}.")


def _number(name: str, path: str) -> int:
  """The number in a release's video or file name ("Train001" -> 1, "7_label.mat" -> 7)."""
  match = re.search(r"\d+", name)
  if not match:
    raise DataError(f"Cannot tell the video number of {path!r}: its name has no digits.")
  return int(match.group())


# ------------------------------------------------------------------------------------------------
# Frame writers. Each writes a video's frames as 000.<ext>, 001.<ext>, ... into a folder and
# returns how many it wrote.


@dataclasses.dataclass(frozen=True)
class _VideoJob:
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


def _frame_name(index: int, extension: str) -> str:
  return f"{index:03d}{extension}"


def _decode_tiff(path: str) -> np.ndarray:
  """uint8 [H, W] (gray TIFF) or [H, W, 3], decoded as the pipeline decodes TIFFs."""
  # Deferred: tensorflow_io's native ops are only needed for the UCSD releases.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_io as tfio  # pylint: disable=g-import-not-at-top
  try:
    rgba = tfio.experimental.image.decode_tiff(tf.io.read_file(path)).numpy()
  except (tf.errors.OpError, ValueError) as e:
    reason = getattr(e, "message", str(e)).strip().splitlines()[0]
    raise DataError(f"Cannot decode TIFF frame {path!r}: {reason}") from e
  # decode_tiff always returns RGBA; the UCSD frames are gray, replicated in R, G and B.
  rgb = rgba[..., :3]
  if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
    return rgb[..., 0]
  return rgb


def _tiffs_to_png(paths: Sequence[str]) -> Callable[[str], int]:
  def write(folder: str) -> int:
    for i, path in enumerate(paths):
      Image.fromarray(_decode_tiff(path)).save(os.path.join(folder, _frame_name(i, ".png")))
    return len(paths)

  return write


def _copy_frames(paths: Sequence[str]) -> Callable[[str], int]:
  def write(folder: str) -> int:
    for i, path in enumerate(paths):
      extension = os.path.splitext(path)[1].lower()
      shutil.copyfile(path, os.path.join(folder, _frame_name(i, extension)))
    return len(paths)

  return write


def _video_to_jpeg(path: str) -> Callable[[str], int]:
  def write(folder: str) -> int:
    count = 0
    try:
      for count, _, frame in video_io.iter_video(path, check_length=False, threads=True):
        Image.fromarray(frame).save(os.path.join(folder, _frame_name(count, ".jpg")),
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


# ------------------------------------------------------------------------------------------------
# Ground truth. Each writer writes the label file to a given path.


def _atomic_save(path: str, save: Callable) -> None:
  """Calls save(file object) on a temporary file and renames it to path when complete."""

  def write(temporary):
    with open(temporary, "wb") as f:
      save(f)

  fileio.write_atomically(path, write)


_GT_ENTRY = re.compile(r"gt\s*\{\s*(\d+)\s*\}\s*=\s*\[([^\]]*)\]")


def _parse_ucsd_ranges(body: str, path: str, index: int) -> np.ndarray:
  """uint16 [2, K] of 1-based inclusive [start; end] from the inside of `[a:b, c:d]`."""
  intervals = []
  tokens = re.sub(r"\s*:\s*", ":", body).replace(",", " ").replace(";", " ").split()
  for token in tokens:
    if not re.fullmatch(r"\d+(:\d+){0,2}", token):
      raise DataError(f"Ground truth {path!r}: cannot parse {token!r} in gt{{{index}}}.")
    numbers = [int(n) for n in token.split(":")]
    if len(numbers) == 3:
      if numbers[1] != 1:
        raise DataError(f"Ground truth {path!r}: gt{{{index}}} has the strided range "
                        f"{token!r}; only contiguous ranges are supported.")
      numbers = [numbers[0], numbers[2]]
    start, end = numbers[0], numbers[-1]
    if not 1 <= start <= end:
      raise DataError(f"Ground truth {path!r}: gt{{{index}}} has the empty or non-positive "
                      f"range {token!r}.")
    intervals.append((start, end))
  return np.array(intervals, np.uint16).reshape(-1, 2).T


def parse_ucsd_ground_truth(path: str) -> List[np.ndarray]:
  """Parses an official UCSDpedN.m ground-truth file.

  Args:
    path: the .m file, holding lines `TestDataset.gt{i} = [a:b];` or `[a:b, c:d]`.

  Returns:
    One uint16 [2, K] array of 1-based inclusive [start; end] intervals per test video, video 1
    first.

  Raises:
    DataError: no entries, an unparsable range, or entry numbers that are not 1..N.
  """
  with open(path, "r", encoding="utf-8", errors="replace") as f:
    # MATLAB comments run from % to the end of the line.
    text = "\n".join(line.split("%", 1)[0] for line in f.read().splitlines())
  entries = {}
  for match in _GT_ENTRY.finditer(text):
    index = int(match.group(1))
    if index in entries:
      raise DataError(f"Ground truth {path!r} sets gt{{{index}}} twice.")
    entries[index] = _parse_ucsd_ranges(match.group(2), path, index)
  if not entries:
    raise DataError(f"Ground truth {path!r} has no `gt{{i}} = [start:end];` entries.")
  if sorted(entries) != list(range(1, len(entries) + 1)):
    raise DataError(f"Ground truth {path!r} has entries gt{{{sorted(entries)}}}, expected "
                    f"gt{{1}}..gt{{{len(entries)}}}.")
  return [entries[i] for i in range(1, len(entries) + 1)]


def _ucsd_label_writer(gt_path: str) -> Tuple[Callable[[str], None], int]:
  """The writer of the `gt` cell .mat, and the number of videos the .m file labels."""
  intervals = parse_ucsd_ground_truth(gt_path)

  def write(path: str) -> None:
    cell = np.empty((1, len(intervals)), dtype=object)
    for i, array in enumerate(intervals):
      cell[0, i] = array
    _atomic_save(path, lambda f: scipy.io.savemat(f, {"gt": cell}))

  return write, len(intervals)


def _avenue_label_writer(mask_dir: str, test_names: Sequence[str]) -> Callable[[str], None]:
  """The writer of the per-video .mat from N_label.mat masks; checks file names at once."""
  files = _list(mask_dir, (".mat",))
  by_number = {int(n): n for n in test_names if n.isdigit()}
  keys = {}
  for file in files:
    number = _number(file, os.path.join(mask_dir, file))
    if number not in by_number:
      raise DataError(f"Label mask {os.path.join(mask_dir, file)!r} has no test video "
                      f"numbered {number} (test videos: {', '.join(test_names)}).")
    keys[by_number[number]] = os.path.join(mask_dir, file)
  missing = [n for n in test_names if n not in keys]
  if missing:
    raise DataError(f"Folder {mask_dir!r} has no label mask for test video(s) "
                    f"{', '.join(missing)}.")

  def write(path: str) -> None:
    per_video = {}
    for name in test_names:
      mask_path = keys[name]
      try:
        contents = scipy.io.loadmat(mask_path)
      except (ValueError, TypeError, NotImplementedError, OSError) as e:
        raise DataError(f"Cannot read label mask {mask_path!r}: {e}") from e
      if "volLabel" not in contents:
        raise DataError(f"Label mask {mask_path!r} has no `volLabel` variable.")
      masks = np.asarray(contents["volLabel"], dtype=object).ravel()
      per_video[name] = np.array(
          [[np.any(np.asarray(m) != 0) for m in masks]], np.uint8).reshape(1, -1)
    _atomic_save(path, lambda f: scipy.io.savemat(f, per_video))

  return write


def _numpy_label_writer(mask_dir: str, test_names: Sequence[str]) -> Callable[[str], None]:
  """The writer of the .npz of <video>.npy frame masks; checks file names at once."""
  files = {os.path.splitext(f)[0]: os.path.join(mask_dir, f) for f in _list(mask_dir, (".npy",))}
  missing = [n for n in test_names if n not in files]
  if missing:
    raise DataError(f"Folder {mask_dir!r} has no <video>.npy frame mask for test video(s) "
                    f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}.")
  extra = sorted(set(files) - set(test_names), key=layout.natural_key)
  if extra:
    raise DataError(f"Folder {mask_dir!r} has frame masks of videos with no test frames: "
                    f"{', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''}.")

  def write(path: str) -> None:
    arrays = {}
    for name in test_names:
      try:
        arrays[name] = (np.load(files[name]).ravel() != 0).astype(np.uint8)
      except (ValueError, OSError) as e:
        raise DataError(f"Cannot read frame mask {files[name]!r}: {e}") from e
    _atomic_save(path, lambda f: np.savez_compressed(f, **arrays))

  return write


# ------------------------------------------------------------------------------------------------
# Converters: (release root, source, ReleaseFormat) -> (video jobs, label writer). They list
# files and parse small ground-truth files only, so a run that finds its output complete costs
# seconds; the frames are decoded by the jobs and the masks read by the label writer.


def _ucsd_jobs(root: str, source: str, release: ReleaseFormat):
  jobs = []
  for split, folder in (("training", "Train"), ("testing", "Test")):
    split_dir = os.path.join(root, folder)
    # Test003_gt and the like hold pixel masks, not frames.
    names = [n for n in _list(split_dir, dirs=True) if not n.lower().endswith("_gt")]
    if not names:
      raise DataError(f"Folder {split_dir!r} holds no video folders.")
    numbers = [_number(n, os.path.join(split_dir, n)) for n in names]
    # The .m ground truth is positional: gt{i} belongs to the i-th test video.
    if split == "testing" and numbers != list(range(1, len(names) + 1)):
      raise DataError(f"Folder {split_dir!r} holds the videos {', '.join(names)}; expected "
                      f"{folder}001..{folder}{len(names):03d} with none missing.")
    for name, number in zip(names, numbers):
      video_dir = os.path.join(split_dir, name)
      paths = [os.path.join(video_dir, f) for f in _list(video_dir, registry.TIFF_EXTENSIONS)]
      if not paths:
        raise DataError(f"Video folder {video_dir!r} holds no .tif frames.")
      jobs.append(_VideoJob(split=split, name=f"{number:02d}", source=video_dir,
                            write=_tiffs_to_png(paths), num_frames=len(paths)))
  gt_path = _find_ground_truth(root, source, release)
  label_writer, num_labelled = _ucsd_label_writer(gt_path)
  num_test = sum(j.split == "testing" for j in jobs)
  if num_labelled != num_test:
    raise DataError(f"Ground truth {gt_path!r} labels {num_labelled} videos but "
                    f"{os.path.join(root, 'Test')!r} holds {num_test} test videos.")
  return jobs, label_writer


def _video_jobs(split: str, folder: str) -> List[_VideoJob]:
  names = _list(folder, _VIDEO_EXTENSIONS)
  if not names:
    raise DataError(f"Folder {folder!r} holds no video files ({', '.join(_VIDEO_EXTENSIONS)}).")
  return [_VideoJob(split=split, name=os.path.splitext(n)[0], source=os.path.join(folder, n),
                    write=_video_to_jpeg(os.path.join(folder, n))) for n in names]


def _avenue_jobs(root: str, source: str, release: ReleaseFormat):
  jobs = (_video_jobs("training", os.path.join(root, "training_videos")) +
          _video_jobs("testing", os.path.join(root, "testing_videos")))
  test_names = [j.name for j in jobs if j.split == "testing"]
  label_writer = _avenue_label_writer(_find_ground_truth(root, source, release), test_names)
  return jobs, label_writer


def _shanghaitech_jobs(root: str, source: str, release: ReleaseFormat):
  jobs = _video_jobs("training", os.path.join(root, "training", "videos"))
  frames_dir = os.path.join(root, "testing", "frames")
  names = _list(frames_dir, dirs=True)
  if not names:
    raise DataError(f"Folder {frames_dir!r} holds no video folders.")
  for name in names:
    video_dir = os.path.join(frames_dir, name)
    paths = [os.path.join(video_dir, f) for f in _list(video_dir, registry.IMAGE_EXTENSIONS)]
    if not paths:
      raise DataError(f"Video folder {video_dir!r} holds no frames.")
    jobs.append(_VideoJob(split="testing", name=name, source=video_dir,
                          write=_copy_frames(paths), num_frames=len(paths)))
  label_writer = _numpy_label_writer(_find_ground_truth(root, source, release), names)
  return jobs, label_writer


_CONVERTERS = {
    KIND_UCSD: _ucsd_jobs,
    KIND_AVENUE: _avenue_jobs,
    KIND_SHANGHAITECH: _shanghaitech_jobs,
}


# ------------------------------------------------------------------------------------------------
# Writing.


def _video_dir(output_dir: str, job: _VideoJob) -> str:
  return os.path.join(output_dir, job.split, layout.FRAMES_DIR, job.name)


def _is_done(output_dir: str, job: _VideoJob) -> bool:
  """Whether the job's video folder is in place (complete, since it is renamed in whole)."""
  folder = _video_dir(output_dir, job)
  if not os.path.isdir(folder):
    return False
  if job.num_frames is None:
    return True
  count = sum(1 for f in os.listdir(folder) if _is_visible(f))
  if count != job.num_frames:
    logging.warning("%s holds %d frames but its source %s has %d; converting it again.",
                    folder, count, job.source, job.num_frames)
    return False
  return True


def _write_video(output_dir: str, tmp_root: str, job: _VideoJob) -> int:
  tmp = os.path.join(tmp_root, f"{job.split}-{job.name}")
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  os.makedirs(tmp)
  num_frames = job.write(tmp)
  final = _video_dir(output_dir, job)
  if os.path.exists(final):
    shutil.rmtree(final)
  os.makedirs(os.path.dirname(final), exist_ok=True)
  os.rename(tmp, final)
  return num_frames


def prepare(dataset: str, source: str, output_dir: str, expected: Optional[ExpectedCounts] = None,
            check_counts: bool = True, verify_only: bool = False) -> Summary:
  """Converts an official download to the frames layout (if needed) and verifies the result.

  Args:
    dataset: registry name with an entry in RELEASE_FORMATS.
    source: the unpacked official download (see the module docstring), or a dataset already in
      the frames layout (then only verified, in place). Unused with verify_only.
    output_dir: the dataset root to write.
    expected: counts the result must have; None: default_expected_counts(dataset).
    check_counts: False skips the count check (labels are still checked against the frames).
    verify_only: only verify output_dir.

  Returns:
    The Summary of the verified dataset.

  Raises:
    DataError: the source is not the dataset's release or is malformed (naming the file), a
      video cannot be decoded (naming the file and frame), or the verification fails.
    UnknownDatasetError: dataset is not in the registry.
  """
  spec = registry.get_spec(dataset)
  if verify_only:
    return verify(output_dir, dataset, expected, check_counts)
  release = release_format(dataset)
  if not os.path.isdir(source):
    raise DataError(f"Source {source!r} does not exist or is not a folder.")
  if _is_frames_layout(source):
    logging.info("Source %s already is in the frames layout: verifying it in place and "
                 "writing nothing (use it as --data_dir).", source)
    return verify(source, dataset, expected, check_counts)

  root = _find_release_root(source, release, dataset)
  logging.info("Preparing %s from the official release in %s into %s.", dataset, root,
               output_dir)
  jobs, label_writer = _CONVERTERS[release.kind](root, source, release)
  label_path = os.path.join(output_dir, spec.label_file)
  todo = [job for job in jobs if not _is_done(output_dir, job)]
  if not todo and os.path.exists(label_path):
    logging.info("%s is complete (%d videos and %s): nothing to do.", output_dir, len(jobs),
                 spec.label_file)
    return verify(output_dir, dataset, expected, check_counts)

  os.makedirs(output_dir, exist_ok=True)
  tmp_root = os.path.join(output_dir, TMP_DIR)
  # Left over by an interrupted run; its videos are redone below.
  if os.path.exists(tmp_root):
    shutil.rmtree(tmp_root)
  os.makedirs(tmp_root)
  # Before the frames: a malformed ground truth fails in seconds, not after hours of decoding.
  if not os.path.exists(label_path):
    label_writer(label_path)
    logging.info("Wrote %s.", label_path)
  logging.info("%d of %d videos to convert (%d already in place).", len(todo), len(jobs),
               len(jobs) - len(todo))
  progress = progress_lib.Progress(len(todo), unit_name="video")
  for done, job in enumerate(todo, start=1):
    num_frames = _write_video(output_dir, tmp_root, job)
    progress.update(done, lambda: f"[{done}/{len(todo)}] {job.split}/{job.name}: {num_frames} "
                    f"frames from {job.source}")
  shutil.rmtree(tmp_root)
  return verify(output_dir, dataset, expected, check_counts)


# ------------------------------------------------------------------------------------------------
# Entry point.


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the preparation flags (call once, before `app.run(main)`)."""
  flags.DEFINE_string("dataset", None,
                      f"Registry name, one of {', '.join(sorted(RELEASE_FORMATS))}.",
                      flag_values=flag_values)
  flags.DEFINE_string("source", None, "The unpacked official download (or a folder holding it).",
                      flag_values=flag_values)
  flags.DEFINE_string("output_dir", None, "Dataset root to write (the later --data_dir).",
                      flag_values=flag_values)
  flags.DEFINE_boolean("verify_only", False, "Only verify --output_dir; --source is not needed.",
                       flag_values=flag_values)
  flags.DEFINE_boolean("check_counts", True,
                       "Require the video and frame counts of the full official release.",
                       flag_values=flag_values)
  flags.mark_flags_as_required(["dataset", "output_dir"], flag_values=flag_values)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  flag_values = flags.FLAGS
  if not flag_values.verify_only and not flag_values.source:
    raise app.UsageError("--source is required unless --verify_only is set.")
  cli.exit_on_expected_errors(
      prepare, flag_values.dataset, os.path.expanduser(flag_values.source or ""),
      os.path.expanduser(flag_values.output_dir), check_counts=flag_values.check_counts,
      verify_only=flag_values.verify_only)


if __name__ == "__main__":
  define_flags()
  app.run(main)
