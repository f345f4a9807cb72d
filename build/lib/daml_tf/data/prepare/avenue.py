"""CUHK Avenue: AVI videos become JPEG frames, the N_label.mat masks a per-video .mat."""

import os
from typing import Callable, Sequence

import numpy as np
import scipy.io

from daml_tf.data.prepare import common
from daml_tf.errors import DataError


def label_writer(mask_dir: str, test_names: Sequence[str]) -> Callable[[str], None]:
  """The writer of the per-video .mat from N_label.mat masks; checks file names at once."""
  files = common.list_entries(mask_dir, (".mat",))
  by_number = {int(n): n for n in test_names if n.isdigit()}
  keys = {}
  for file in files:
    number = common.video_number(file, os.path.join(mask_dir, file))
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
    common.atomic_save(path, lambda f: scipy.io.savemat(f, per_video))

  return write


def jobs(root: str, source: str, release: common.ReleaseFormat):
  jobs = (common.video_jobs("training", os.path.join(root, "training_videos")) +
          common.video_jobs("testing", os.path.join(root, "testing_videos")))
  test_names = [j.name for j in jobs if j.split == "testing"]
  writer = label_writer(common.find_ground_truth(root, source, release), test_names)
  return jobs, writer
