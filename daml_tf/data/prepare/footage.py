"""A camera's own footage: video files into the frames layout that `train --dataset=custom` reads.

  python -m daml_tf.data.prepare --videos=<folder | glob | file> --output_dir=DIR
      [--every_nth=N | --fps=F] [--max_frames=N] [--holdout=0.1] [--resize=HxW] [--gray]
      [--[no]split_cuts] [--cut_factor=3] [--cut_floor=0.01] [--max_gap_s=2]

writes, for every video file (any container FFmpeg reads, decoded by PyAV through video_io):

  DIR/training/frames/<video>/000.png ...           the training frames
  DIR/holdout/training/frames/<video>/000.png ...   the last --holdout share of each video, for
                                                    `calibrate --videos_dir=DIR/holdout`

Frames are kept by --every_nth (every Nth decoded frame) or --fps (the first frame of every
1/F-second slot of the stream's timestamps), then capped at --max_frames (per file). PNG is
lossless, so what the model trains on is what the decoder produced.

A recording is then split into segments, each its own video: at scene cuts (a kept frame far
more different from the previous kept frame than the recording's frames usually are: an export
that concatenates clips, a camera that was moved) and at breaks in the stream's timestamps (a
jump of more than --max_gap_s, or backwards). A training clip spanning a cut would teach the
motion model a jump no camera shows, and --holdout, taken from the end of each segment, then
calibrates on every scene instead of the last one. A file with one segment keeps its name;
with several they are <video>_s01, <video>_s02, ... (numbered in order, skipped ones included).
--nosplit_cuts writes every file as one video.

A segment with fewer kept frames than --min_frames (one clip) is skipped with a warning; a
segment too short to give both parts a clip keeps all its frames for training, also with a
warning. A file FFmpeg cannot open is logged by name and the others are still converted;
`prepare_footage` then raises DataError naming every such file (exit 1 from the command line).
A video that stops decoding part-way keeps the frames decoded before (a truncated recording).
"""

import dataclasses
import glob
import math
import os
import re
import shutil
from typing import Dict, Iterator, List, Optional, Tuple

from absl import logging
import numpy as np
from PIL import Image

from daml_tf import errors
from daml_tf import progress as progress_lib
from daml_tf.data import video_io
from daml_tf.data import layout
from daml_tf.data import registry
from daml_tf.data.prepare import common

HOLDOUT_DIR = "holdout"
FRAME_EXTENSION = ".png"
# video_io's list plus the broadcast and camera containers FFmpeg also reads.
FOOTAGE_EXTENSIONS = tuple(sorted(set(video_io.VIDEO_EXTENSIONS) | {
    ".ts", ".mts", ".m2ts", ".flv", ".3gp"}))
CUSTOM_DATASET = "custom"

# Cut detection compares kept frames as small gray thumbnails (area means, values in [0, 1]):
# small enough that sensor and compression noise averages out and that costs little next to
# the PNG encoding, large enough that a walker still covers a few of its cells.
THUMBNAIL_SIZE = (32, 48)
# A kept frame starts a new segment when its mean absolute thumbnail difference to the previous
# kept frame exceeds max(cut_floor, cut_factor * the recording's median difference). Chosen on
# the synthetic dataset (python -m daml_tf.data.synthetic, seed 0, 120x180, 32x48 thumbnails):
# its frame differences have a median of 0.0045-0.0059 per video and never exceed 1.7x it
# (0.0083), runners and carts of the test videos included; a cut between two of its videos
# (same camera, another time, another crowd and exposure) differs by 0.011-0.041 (2.5-9x), a
# cut to another scene (seed 1) by 0.046 (10x), the camera moved by 2 / 4 px of 180 by 0.021 /
# 0.037 (4.6x / 8x). A factor of 3 keeps a margin of almost 2x over normal motion and catches all
# of those cuts but the faintest same-camera one; the floor (2.5 gray levels over the whole
# frame), above every normal synthetic difference and below every cut, keeps a near-static
# recording (median near 0: noise only) from being cut wherever someone walks by. A missed cut
# costs more than a false one (its clips dominate the calibration tail; a false one loses the
# ~one clip span of frames around it), hence a factor near the normal spread, not far above it.
DEFAULT_CUT_FACTOR = 3.0
DEFAULT_CUT_FLOOR = 0.01
# A jump of the stream's timestamps larger than this between two decoded frames (or any jump
# backwards) is a break: a recording resumed after a pause, an NVR export of several segments.
DEFAULT_MAX_GAP_S = 2.0


def default_min_frames() -> int:
  """Frames of one clip at the `custom` dataset's default geometry."""
  spec = registry.get_spec(CUSTOM_DATASET)
  return spec.interval * (spec.time_steps - 1) + spec.delta + 1


@dataclasses.dataclass(frozen=True)
class FootageOptions:
  """How frames are picked from each video and written.

  Attributes:
    every_nth: keep every Nth decoded frame (1: all).
    fps: > 0: keep about this many frames per second of the stream's timestamps instead.
    max_frames: keep at most this many frames of each video (after subsampling; 0: all).
    holdout: share of each video's kept frames, its last ones, written to the holdout part.
    min_frames: a video (and each part of it) needs this many frames, one clip.
    size: (height, width) to resize frames to, or None to keep the source size.
    gray: write 8-bit gray frames instead of RGB.
    split_cuts: split each file into segments at scene cuts and timestamp breaks.
    cut_factor: a cut differs from the previous kept frame by more than this times the file's
      median difference of consecutive kept frames ...
    cut_floor: ... and by more than this (mean absolute difference of gray thumbnails, 0-1).
    max_gap_s: a forward jump of the stream's timestamps above this (seconds) is a break; 0:
      only backward jumps are.
  """

  every_nth: int = 1
  fps: float = 0.0
  max_frames: int = 0
  holdout: float = 0.0
  min_frames: int = dataclasses.field(default_factory=default_min_frames)
  size: Optional[Tuple[int, int]] = None
  gray: bool = False
  split_cuts: bool = True
  cut_factor: float = DEFAULT_CUT_FACTOR
  cut_floor: float = DEFAULT_CUT_FLOOR
  max_gap_s: float = DEFAULT_MAX_GAP_S

  def __post_init__(self):
    problems = [
        (self.every_nth >= 1, f"--every_nth must be >= 1, got {self.every_nth}."),
        (self.fps >= 0, f"--fps must be >= 0, got {self.fps}."),
        (not (self.fps and self.every_nth != 1), "Give --every_nth or --fps, not both."),
        (self.max_frames >= 0, f"--max_frames must be >= 0, got {self.max_frames}."),
        (0 <= self.holdout < 1, f"--holdout must be in [0, 1), got {self.holdout}."),
        (self.min_frames >= 1, f"--min_frames must be >= 1, got {self.min_frames}."),
        (self.cut_factor > 1, f"--cut_factor must be > 1, got {self.cut_factor}."),
        (0 <= self.cut_floor <= 1, f"--cut_floor must be in [0, 1], got {self.cut_floor}."),
        (self.max_gap_s >= 0, f"--max_gap_s must be >= 0, got {self.max_gap_s}."),
    ]
    for ok, message in problems:
      if not ok:
        raise errors.ConfigError(message)


def parse_size(text: str) -> Optional[Tuple[int, int]]:
  """"HxW" -> (H, W); "" -> None. ConfigError on anything else."""
  if not text:
    return None
  parts = text.lower().split("x")
  if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
    raise errors.ConfigError(f"--resize must be HEIGHTxWIDTH, e.g. 64x96, got {text!r}.")
  return int(parts[0]), int(parts[1])


@dataclasses.dataclass(frozen=True)
class FootageSummary:
  """What `prepare_footage` wrote: {video: (training frames, held-out frames)} (a video being a
  file or one of its segments), the files skipped as too short, and {file's name: where it was
  split}."""

  videos: dict
  skipped: Tuple[str, ...]
  splits: dict = dataclasses.field(default_factory=dict)


def find_video_files(videos: str) -> List[str]:
  """The video files of a folder (not its subfolders), a glob pattern or a single file.

  Raises:
    DataError: nothing with a video extension matches.
  """
  if os.path.isdir(videos):
    candidates = [os.path.join(videos, name) for name in os.listdir(videos)]
  else:
    candidates = glob.glob(os.path.expanduser(videos), recursive=True)
  found = [path for path in candidates if os.path.isfile(path)
           and common.is_visible(os.path.basename(path))
           and path.lower().endswith(FOOTAGE_EXTENSIONS)]
  if not found:
    raise errors.DataError(
        f"No video files found for --videos={videos!r}: give a folder, a glob pattern (quote "
        f"it) or a file, with one of the extensions {', '.join(FOOTAGE_EXTENSIONS)}.")
  return sorted(found, key=layout.natural_key)


def video_names(paths: List[str]) -> List[str]:
  """Output names: the file names without extension, numbered on a clash (a.mp4, a.avi)."""
  names, seen = [], set()
  for path in paths:
    stem = os.path.splitext(os.path.basename(path))[0]
    name, number = stem, 2
    while name in seen:
      name, number = f"{stem}_{number}", number + 1
    seen.add(name)
    names.append(name)
  return names


def _kept_frames(path: str,
                 options: FootageOptions) -> Iterator[Tuple[np.ndarray, Optional[float]]]:
  """The frames of `path` that --every_nth/--fps and --max_frames keep, decoded one at a time,
  each with the step (seconds) of the stream's timestamps at a break between it and the
  previous kept frame (more than --max_gap_s forward between two decoded frames, or any
  backward step; the largest if several), else None."""
  kept, last_slot, previous, jump = 0, -1, None, None
  for index, timestamp, frame in video_io.iter_video(path, check_length=False, threads=True):
    step = None if previous is None else timestamp - previous
    previous = timestamp
    if step is not None and (step < 0 or 0 < options.max_gap_s < step):
      jump = step if jump is None or abs(step) > abs(jump) else jump
    if options.fps:
      # The first frame of each 1/fps-second slot; the epsilon absorbs timestamp rounding.
      slot = math.floor(timestamp * options.fps + 1e-6)
      if step is not None and step < 0:
        last_slot = slot - 1  # Timestamps restarted: slots count again from here.
      if slot <= last_slot:
        continue
      last_slot = slot
    elif index % options.every_nth:
      continue
    yield frame, jump
    jump = None
    kept += 1
    if kept == options.max_frames:
      return


def thumbnail(frame: np.ndarray, size: Tuple[int, int] = THUMBNAIL_SIZE) -> np.ndarray:
  """float32 [size] gray version of a uint8 [H, W, C] or [H, W] frame in [0, 1]: the mean of
  each cell of a size[0] x size[1] grid (cells differ by at most one pixel; smaller frames
  repeat pixels)."""
  image = np.asarray(frame, np.float32)
  if image.ndim == 3:
    # ITU-R BT.601 luma, what PIL's convert("L") computes.
    image = image @ np.float32([0.299, 0.587, 0.114]) if image.shape[-1] == 3 else image[..., 0]
  rows = np.linspace(0, image.shape[0], size[0] + 1).astype(int)[:-1]
  cols = np.linspace(0, image.shape[1], size[1] + 1).astype(int)[:-1]
  sums = np.add.reduceat(np.add.reduceat(image, rows, axis=0), cols, axis=1)
  counts = np.outer(np.diff(np.append(rows, image.shape[0])),
                    np.diff(np.append(cols, image.shape[1])))
  return sums / np.maximum(counts, 1) / 255.0


@dataclasses.dataclass(frozen=True)
class Recording:
  """What decoding one file kept.

  Attributes:
    count: kept frames.
    differences: float [count - 1], mean absolute thumbnail difference of kept frame i + 1 to
      kept frame i (empty when cuts are not looked for).
    jumps: {kept frame index: timestamp jump (s) before it} at breaks of the stream.
  """

  count: int
  differences: np.ndarray
  jumps: Dict[int, float]


@dataclasses.dataclass(frozen=True)
class Splits:
  """Where a file is split: kept-frame indices that start a new segment.

  Attributes:
    cuts: {kept frame index: its difference to the previous kept frame} above `threshold`.
    gaps: {kept frame index: the timestamp jump (s) before it}.
    median: the file's median difference of consecutive kept frames.
    threshold: max(--cut_floor, --cut_factor * median).
  """

  cuts: Dict[int, float]
  gaps: Dict[int, float]
  median: float
  threshold: float

  def starts(self) -> List[int]:
    """Sorted first kept frames of the segments after the first."""
    return sorted(set(self.cuts) | set(self.gaps))


def find_splits(recording: Recording, options: FootageOptions) -> Splits:
  """The scene cuts and stream breaks of a file (none with --nosplit_cuts)."""
  if not options.split_cuts:
    return Splits({}, {}, 0.0, math.inf)
  differences = recording.differences
  if not len(differences):
    return Splits({}, dict(recording.jumps), 0.0, math.inf)
  # The median, not the mean: the cuts themselves must not raise the bar they are held to.
  median = float(np.median(differences))
  threshold = max(options.cut_floor, options.cut_factor * median)
  cuts = {int(i) + 1: float(differences[i]) for i in np.flatnonzero(differences > threshold)}
  return Splits(cuts, dict(recording.jumps), median, threshold)


def segment_names(name: str, count: int) -> List[str]:
  """Folder names of a file's `count` segments: the file's name alone, or name_s01, ..."""
  if count == 1:
    return [name]
  digits = max(2, len(str(count)))
  return [f"{name}_s{i:0{digits}d}" for i in range(1, count + 1)]


def _save_frame(frame: np.ndarray, path: str, options: FootageOptions) -> None:
  image = Image.fromarray(frame)
  if options.gray:
    image = image.convert("L")
  if options.size is not None and image.size != options.size[::-1]:
    image = image.resize(options.size[::-1], Image.BILINEAR)
  image.save(path)


def _write_all(path: str, folder: str, options: FootageOptions) -> Recording:
  """Writes the kept frames of `path` as folder/000.png ...; returns what it kept.

  Raises:
    DataError: the file cannot be opened or has no video stream.
  """
  count, differences, jumps, previous = 0, [], {}, None
  try:
    for count, (frame, jump) in enumerate(_kept_frames(path, options), start=1):
      _save_frame(frame, os.path.join(folder, common.frame_name(count - 1, FRAME_EXTENSION)),
                  options)
      if jump is not None and count > 1:
        jumps[count - 1] = jump
      if options.split_cuts:
        small = thumbnail(frame)
        if previous is not None:
          differences.append(float(np.abs(small - previous).mean()))
        previous = small
  except video_io.CannotOpen as e:
    raise errors.DataError(f"Cannot open video {path!r}: {e.reason}") from e
  except video_io.DecodeStopped as e:
    logging.warning("%s stopped decoding after %d frames (%s); keeping the %d frames kept "
                    "before.", path, e.index, e.reason, count)
  return Recording(count, np.asarray(differences, np.float64), jumps)


def holdout_frames(num_frames: int, options: FootageOptions) -> int:
  """Frames of a video's held-out tail: about the --holdout share, at least one clip, and 0
  when the head would then be shorter than one clip."""
  if not options.holdout:
    return 0
  held = max(math.ceil(options.holdout * num_frames), options.min_frames)
  return held if num_frames - held >= options.min_frames else 0


def _move_frames(folder: str, target: str, first: int, end: int) -> None:
  """Moves frames first..end-1 of folder into a new folder target, renumbered from 000."""
  os.makedirs(target)
  for i in range(first, end):
    os.rename(os.path.join(folder, common.frame_name(i, FRAME_EXTENSION)),
              os.path.join(target, common.frame_name(i - first, FRAME_EXTENSION)))


def _place(tmp: str, final: str) -> None:
  """Renames a complete folder into place, replacing an earlier run's (or removing it)."""
  if os.path.exists(final):
    shutil.rmtree(final)
  if tmp is not None:
    os.makedirs(os.path.dirname(final), exist_ok=True)
    os.rename(tmp, final)


def _output_folders(output_dir: str, name: str) -> Tuple[str, str]:
  """(training, held-out) frames folders of video `name`."""
  return (os.path.join(output_dir, layout.SPLITS[0], layout.FRAMES_DIR, name),
          os.path.join(output_dir, HOLDOUT_DIR, layout.SPLITS[0], layout.FRAMES_DIR, name))


def _remove_earlier(output_dir: str, name: str, keep: frozenset) -> None:
  """Removes what an earlier run wrote for file `name` (as one video or as segments), so that
  a run splitting it differently leaves no stale folder; names in `keep` (other files') stay."""
  pattern = re.compile(re.escape(name) + r"(_s\d{2,})?")
  for parent in {os.path.dirname(folder) for folder in _output_folders(output_dir, name)}:
    if os.path.isdir(parent):
      for entry in os.listdir(parent):
        if pattern.fullmatch(entry) and entry not in keep:
          shutil.rmtree(os.path.join(parent, entry))


def _log_splits(path: str, recording: Recording, splits: Splits) -> None:
  """One line per file: where it is split and how far from the threshold the rest stayed."""
  ratio = lambda d: f"{d:.4f} = {d / splits.median:.1f}x" if splits.median else f"{d:.4f}"
  cuts = ", ".join(f"{i} ({ratio(d)})" for i, d in sorted(splits.cuts.items()))
  gaps = ", ".join(f"{i} ({jump:+.2f} s)" for i, jump in sorted(splits.gaps.items()))
  others = recording.differences.copy()
  others[[i - 1 for i in splits.cuts]] = -1.0
  top = int(np.argmax(others)) if len(others) else 0
  largest = (f"; largest other difference {ratio(others[top])} at kept frame {top + 1}"
             if splits.median and others[top] >= 0 else "")
  logging.info("%s: %d kept frames, median frame difference %.4f, cut threshold %.4f; %d "
               "cut(s) at kept frames [%s]%s; %d timestamp gap(s) at [%s] -> %d segment(s).",
               path, recording.count, splits.median, splits.threshold, len(splits.cuts), cuts,
               largest, len(splits.gaps), gaps, len(splits.starts()) + 1)


def _write_segment(tmp: str, segment: Tuple[int, int], name: str, output_dir: str,
                   options: FootageOptions) -> Tuple[int, int]:
  """Moves kept frames [first, end) of tmp into place as video `name`, its tail held out."""
  first, end = segment
  count = end - first
  folder = tmp + "-" + name
  _move_frames(tmp, folder, first, end)
  held = holdout_frames(count, options)
  if options.holdout and not held:
    logging.warning("%s: %d frames are too few to hold out a clip and keep one for training; "
                    "all of them are training frames.", name, count)
  if held:
    _move_frames(folder, folder + "-" + HOLDOUT_DIR, count - held, count)
  training, holdout = _output_folders(output_dir, name)
  _place(folder, training)
  _place(folder + "-" + HOLDOUT_DIR if held else None, holdout)
  return count - held, held


def _convert_one(path: str, name: str, output_dir: str, tmp_root: str, options: FootageOptions,
                 other_names: frozenset) -> Tuple[Dict[str, Tuple[int, int]], Splits]:
  """Converts one file; returns {video: (training, held-out) frame counts} of its segments
  long enough to keep (empty if none is), and where it was split."""
  tmp = os.path.join(tmp_root, name)
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  os.makedirs(tmp)
  recording = _write_all(path, tmp, options)
  splits = find_splits(recording, options)
  if options.split_cuts:
    _log_splits(path, recording, splits)
  bounds = [0] + splits.starts() + [recording.count]
  segments = list(zip(zip(bounds[:-1], bounds[1:]), segment_names(name, len(bounds) - 1)))
  long_enough = []
  for (first, end), video in segments:
    if end - first >= options.min_frames:
      long_enough.append(((first, end), video))
      continue
    where = f" (segment {video}: kept frames {first}-{end - 1})" if len(segments) > 1 else ""
    logging.warning("Skipping %s%s: %d frames kept, fewer than one clip (--min_frames=%d).",
                    path, where, end - first, options.min_frames)
  if long_enough:
    _remove_earlier(output_dir, name, other_names)
  written = {video: _write_segment(tmp, segment, video, output_dir, options)
             for segment, video in long_enough}
  shutil.rmtree(tmp)
  return written, splits


def prepare_footage(videos: str, output_dir: str,
                    options: FootageOptions = FootageOptions()) -> FootageSummary:
  """Writes the training (and held-out) frames of every video file `videos` names.

  Args:
    videos: a folder of video files, a glob pattern or one file.
    output_dir: the dataset root to write (the later `train --data_dir`).
    options: how frames are picked and written.

  Returns:
    What was written.

  Raises:
    DataError: no video files; after converting the others, files FFmpeg cannot open (all
      named); or no video (or segment) long enough for one clip.
  """
  paths = find_video_files(videos)
  tmp_root = os.path.join(output_dir, ".prepare_tmp")
  if os.path.exists(tmp_root):
    shutil.rmtree(tmp_root)  # Left over by an interrupted run.
  os.makedirs(tmp_root)
  written, skipped, failed, splits = {}, [], [], {}
  names = video_names(paths)
  progress = progress_lib.Progress(len(paths), unit_name="video")
  for done, (path, name) in enumerate(zip(paths, names), start=1):
    try:
      counts, splits[name] = _convert_one(path, name, output_dir, tmp_root, options,
                                          frozenset(names) - {name})
    except errors.DataError as e:
      logging.error("%s", e)
      failed.append(path)
      continue
    if not counts:
      skipped.append(path)
    written.update(counts)
    progress.update(done, lambda: f"[{done}/{len(paths)}] {name}: {counts} frames "
                    f"(training, held out) from {path}")
  shutil.rmtree(tmp_root)
  if failed:
    raise errors.DataError(
        f"{len(failed)} of {len(paths)} video file(s) could not be opened (the other "
        f"{len(paths) - len(failed)} were converted into {output_dir}): {', '.join(failed)}.")
  if not written:
    raise errors.DataError(
        f"None of the {len(paths)} video(s) has --min_frames={options.min_frames} frames (one "
        "clip) after subsampling; lower --every_nth/--fps or --min_frames.")
  logging.info("Wrote %d video(s) into %s: %d training and %d held-out frames.", len(written),
               output_dir, sum(t for t, _ in written.values()),
               sum(h for _, h in written.values()))
  return FootageSummary(videos=written, skipped=tuple(skipped), splits=splits)
