"""UCSD Ped1 and Ped2: TIFF frames become PNG, the .m ground truth becomes the `gt` cell .mat."""

import os
import re
from typing import Callable, List, Sequence, Tuple

import numpy as np
from PIL import Image
import scipy.io

from daml_tf.data import registry
from daml_tf.data import tiff
from daml_tf.data.prepare import common
from daml_tf.errors import DataError


def _decode_tiff(path: str) -> np.ndarray:
  """uint8 [H, W] (gray TIFF) or [H, W, 3], decoded as the pipeline decodes TIFFs."""
  try:
    with open(path, "rb") as f:
      rgba = tiff.to_rgba(f.read())
  except (OSError, ValueError) as e:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DataError(f"Cannot decode TIFF frame {path!r}: {reason}") from e
  # RGBA; the UCSD frames are gray, replicated in R, G and B.
  rgb = rgba[..., :3]
  if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
    return rgb[..., 0]
  return rgb


def _tiffs_to_png(paths: Sequence[str]) -> Callable[[str], int]:
  def write(folder: str) -> int:
    for i, path in enumerate(paths):
      Image.fromarray(_decode_tiff(path)).save(os.path.join(folder, common.frame_name(i, ".png")))
    return len(paths)

  return write


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
    common.atomic_save(path, lambda f: scipy.io.savemat(f, {"gt": cell}))

  return write, len(intervals)


def jobs(root: str, source: str, release: common.ReleaseFormat):
  jobs = []
  for split, folder in (("training", "Train"), ("testing", "Test")):
    split_dir = os.path.join(root, folder)
    # Test003_gt and the like hold pixel masks, not frames.
    names = [n for n in common.list_entries(split_dir, dirs=True) if not n.lower().endswith("_gt")]
    if not names:
      raise DataError(f"Folder {split_dir!r} holds no video folders.")
    numbers = [common.video_number(n, os.path.join(split_dir, n)) for n in names]
    # The .m ground truth is positional: gt{i} belongs to the i-th test video.
    if split == "testing" and numbers != list(range(1, len(names) + 1)):
      raise DataError(f"Folder {split_dir!r} holds the videos {', '.join(names)}; expected "
                      f"{folder}001..{folder}{len(names):03d} with none missing.")
    for name, number in zip(names, numbers):
      video_dir = os.path.join(split_dir, name)
      paths = [os.path.join(video_dir, f)
               for f in common.list_entries(video_dir, registry.TIFF_EXTENSIONS)]
      if not paths:
        raise DataError(f"Video folder {video_dir!r} holds no .tif frames.")
      jobs.append(common.VideoJob(split=split, name=f"{number:02d}", source=video_dir,
                            write=_tiffs_to_png(paths), num_frames=len(paths)))
  gt_path = common.find_ground_truth(root, source, release)
  label_writer, num_labelled = _ucsd_label_writer(gt_path)
  num_test = sum(j.split == "testing" for j in jobs)
  if num_labelled != num_test:
    raise DataError(f"Ground truth {gt_path!r} labels {num_labelled} videos but "
                    f"{os.path.join(root, 'Test')!r} holds {num_test} test videos.")
  return jobs, label_writer
