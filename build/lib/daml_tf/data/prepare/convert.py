"""Converting an official release into the frames layout: the converter of each release format,
the writing of each video into place, then verification."""

import os
import shutil
from typing import Optional

from absl import logging

from daml_tf import progress as progress_lib
from daml_tf.data import layout
from daml_tf.data import registry
from daml_tf.data.prepare import avenue
from daml_tf.data.prepare import common
from daml_tf.data.prepare import shanghaitech
from daml_tf.data.prepare import ucsd
from daml_tf.data.prepare.verify import verify
from daml_tf.errors import DataError

TMP_DIR = ".prepare_tmp"

# Converters: (release root, source, ReleaseFormat) -> (video jobs, label writer). They list
# files and parse small ground-truth files only, so a run that finds its output complete costs
# seconds; the frames are decoded by the jobs and the masks read by the label writer. A new
# release format is one module with a `jobs` function and one line here.
CONVERTERS = {
    common.KIND_UCSD: ucsd.jobs,
    common.KIND_AVENUE: avenue.jobs,
    common.KIND_SHANGHAITECH: shanghaitech.jobs,
}


def _video_dir(output_dir: str, job: common.VideoJob) -> str:
  return os.path.join(output_dir, job.split, layout.FRAMES_DIR, job.name)


def _is_done(output_dir: str, job: common.VideoJob) -> bool:
  """Whether the job's video folder is in place (complete, since it is renamed in whole)."""
  folder = _video_dir(output_dir, job)
  if not os.path.isdir(folder):
    return False
  if job.num_frames is None:
    return True
  count = sum(1 for f in os.listdir(folder) if common.is_visible(f))
  if count != job.num_frames:
    logging.warning("%s holds %d frames but its source %s has %d; converting it again.",
                    folder, count, job.source, job.num_frames)
    return False
  return True


def _write_video(output_dir: str, tmp_root: str, job: common.VideoJob) -> int:
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


def prepare(dataset: str, source: str, output_dir: str,
            expected: Optional[common.ExpectedCounts] = None,
            check_counts: bool = True, verify_only: bool = False) -> common.Summary:
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
  release = common.release_format(dataset)
  if not os.path.isdir(source):
    raise DataError(f"Source {source!r} does not exist or is not a folder.")
  if common.is_frames_layout(source):
    logging.info("Source %s already is in the frames layout: verifying it in place and "
                 "writing nothing (use it as --data_dir).", source)
    return verify(source, dataset, expected, check_counts)

  root = common.find_release_root(source, release, dataset)
  logging.info("Preparing %s from the official release in %s into %s.", dataset, root,
               output_dir)
  jobs, label_writer = CONVERTERS[release.kind](root, source, release)
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
