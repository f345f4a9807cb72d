"""A camera's own footage: video files into the frames layout that `train --dataset=custom` reads.

  python -m daml_tf.data.prepare --videos=<folder | glob | file> --output_dir=DIR
      [--every_nth=N | --fps=F] [--max_frames=N] [--holdout=0.1] [--resize=HxW] [--gray]

writes, for every video file (any container FFmpeg reads, decoded by PyAV through video_io):

  DIR/training/frames/<video>/000.png ...           the training frames
  DIR/holdout/training/frames/<video>/000.png ...   the last --holdout share of each video, for
                                                    `calibrate --videos_dir=DIR/holdout`

Frames are kept by --every_nth (every Nth decoded frame) or --fps (the first frame of every
1/F-second slot of the stream's timestamps), then capped at --max_frames, then split. PNG is
lossless, so what the model trains on is what the decoder produced.

A video with fewer kept frames than --min_frames (one clip) is skipped with a warning; a
video too short to give both parts a clip keeps all its frames for training, also with a
warning. A file FFmpeg cannot open is logged by name and the others are still converted;
`prepare_footage` then raises DataError naming every such file (exit 1 from the command line).
A video that stops decoding part-way keeps the frames decoded before (a truncated recording).
"""

import dataclasses
import glob
import math
import os
import shutil
from typing import Iterator, List, Optional, Tuple

from absl import logging
import numpy as np
from PIL import Image

from daml_tf import errors
from daml_tf import progress as progress_lib
from daml_tf import video_io
from daml_tf.data import layout
from daml_tf.data import registry
from daml_tf.data.prepare import common

HOLDOUT_DIR = "holdout"
FRAME_EXTENSION = ".png"
# video_io's list plus the broadcast and camera containers FFmpeg also reads.
FOOTAGE_EXTENSIONS = tuple(sorted(set(video_io.VIDEO_EXTENSIONS) | {
    ".ts", ".mts", ".m2ts", ".flv", ".3gp"}))
CUSTOM_DATASET = "custom"


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
  """

  every_nth: int = 1
  fps: float = 0.0
  max_frames: int = 0
  holdout: float = 0.0
  min_frames: int = dataclasses.field(default_factory=default_min_frames)
  size: Optional[Tuple[int, int]] = None
  gray: bool = False

  def __post_init__(self):
    problems = [
        (self.every_nth >= 1, f"--every_nth must be >= 1, got {self.every_nth}."),
        (self.fps >= 0, f"--fps must be >= 0, got {self.fps}."),
        (not (self.fps and self.every_nth != 1), "Give --every_nth or --fps, not both."),
        (self.max_frames >= 0, f"--max_frames must be >= 0, got {self.max_frames}."),
        (0 <= self.holdout < 1, f"--holdout must be in [0, 1), got {self.holdout}."),
        (self.min_frames >= 1, f"--min_frames must be >= 1, got {self.min_frames}."),
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
  """What `prepare_footage` wrote: {video: (training frames, held-out frames)}, and the files
  skipped as too short."""

  videos: dict
  skipped: Tuple[str, ...]


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


def _kept_frames(path: str, options: FootageOptions) -> Iterator[np.ndarray]:
  """The frames of `path` that --every_nth/--fps and --max_frames keep, decoded one at a time."""
  kept, last_slot = 0, -1
  for index, timestamp, frame in video_io.iter_video(path, check_length=False, threads=True):
    if options.fps:
      # The first frame of each 1/fps-second slot; the epsilon absorbs timestamp rounding.
      slot = math.floor(timestamp * options.fps + 1e-6)
      if slot <= last_slot:
        continue
      last_slot = slot
    elif index % options.every_nth:
      continue
    yield frame
    kept += 1
    if kept == options.max_frames:
      return


def _save_frame(frame: np.ndarray, path: str, options: FootageOptions) -> None:
  image = Image.fromarray(frame)
  if options.gray:
    image = image.convert("L")
  if options.size is not None and image.size != options.size[::-1]:
    image = image.resize(options.size[::-1], Image.BILINEAR)
  image.save(path)


def _write_all(path: str, folder: str, options: FootageOptions) -> int:
  """Writes the kept frames of `path` as folder/000.png ...; returns their number.

  Raises:
    DataError: the file cannot be opened or has no video stream.
  """
  count = 0
  try:
    for count, frame in enumerate(_kept_frames(path, options), start=1):
      _save_frame(frame, os.path.join(folder, common.frame_name(count - 1, FRAME_EXTENSION)),
                  options)
  except video_io.CannotOpen as e:
    raise errors.DataError(f"Cannot open video {path!r}: {e.reason}") from e
  except video_io.DecodeStopped as e:
    logging.warning("%s stopped decoding after %d frames (%s); keeping the %d frames kept "
                    "before.", path, e.index, e.reason, count)
  return count


def holdout_frames(num_frames: int, options: FootageOptions) -> int:
  """Frames of a video's held-out tail: about the --holdout share, at least one clip, and 0
  when the head would then be shorter than one clip."""
  if not options.holdout:
    return 0
  held = max(math.ceil(options.holdout * num_frames), options.min_frames)
  return held if num_frames - held >= options.min_frames else 0


def _move_tail(folder: str, tail_folder: str, first: int, count: int) -> None:
  """Moves frames first..count-1 of folder into tail_folder, renumbered from 000."""
  os.makedirs(tail_folder)
  for i in range(first, count):
    os.rename(os.path.join(folder, common.frame_name(i, FRAME_EXTENSION)),
              os.path.join(tail_folder, common.frame_name(i - first, FRAME_EXTENSION)))


def _place(tmp: str, final: str) -> None:
  """Renames a complete folder into place, replacing an earlier run's (or removing it)."""
  if os.path.exists(final):
    shutil.rmtree(final)
  if tmp is not None:
    os.makedirs(os.path.dirname(final), exist_ok=True)
    os.rename(tmp, final)


def _convert_one(path: str, name: str, output_dir: str, tmp_root: str,
                 options: FootageOptions) -> Optional[Tuple[int, int]]:
  """Converts one video; returns (training, held-out) frame counts, or None if too short."""
  tmp = os.path.join(tmp_root, name)
  tmp_tail = tmp + "-" + HOLDOUT_DIR
  for folder in (tmp, tmp_tail):
    if os.path.exists(folder):
      shutil.rmtree(folder)
  os.makedirs(tmp)
  count = _write_all(path, tmp, options)
  if count < options.min_frames:
    logging.warning("Skipping %s: %d frames kept, fewer than one clip (--min_frames=%d).",
                    path, count, options.min_frames)
    shutil.rmtree(tmp)
    return None
  held = holdout_frames(count, options)
  if options.holdout and not held:
    logging.warning("%s: %d frames are too few to hold out a clip and keep one for training; "
                    "all of them are training frames.", path, count)
  if held:
    _move_tail(tmp, tmp_tail, count - held, count)
  _place(tmp, os.path.join(output_dir, layout.SPLITS[0], layout.FRAMES_DIR, name))
  _place(tmp_tail if held else None, os.path.join(
      output_dir, HOLDOUT_DIR, layout.SPLITS[0], layout.FRAMES_DIR, name))
  return count - held, held


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
      named); or no video long enough for one clip.
  """
  paths = find_video_files(videos)
  tmp_root = os.path.join(output_dir, ".prepare_tmp")
  if os.path.exists(tmp_root):
    shutil.rmtree(tmp_root)  # Left over by an interrupted run.
  os.makedirs(tmp_root)
  written, skipped, failed = {}, [], []
  progress = progress_lib.Progress(len(paths), unit_name="video")
  for done, (path, name) in enumerate(zip(paths, video_names(paths)), start=1):
    try:
      counts = _convert_one(path, name, output_dir, tmp_root, options)
    except errors.DataError as e:
      logging.error("%s", e)
      failed.append(path)
      continue
    if counts is None:
      skipped.append(path)
    else:
      written[name] = counts
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
  return FootageSummary(videos=written, skipped=tuple(skipped))
