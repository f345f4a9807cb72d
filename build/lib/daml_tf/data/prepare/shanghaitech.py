"""ShanghaiTech: training videos become JPEG frames, the test frames are copied, the
<video>.npy frame masks are collected into one .npz."""

import os
from typing import Callable, Sequence

import numpy as np

from daml_tf.data import layout
from daml_tf.data import registry
from daml_tf.data.prepare import common
from daml_tf.errors import DataError


def label_writer(mask_dir: str, test_names: Sequence[str]) -> Callable[[str], None]:
  """The writer of the .npz of <video>.npy frame masks; checks file names at once."""
  files = {os.path.splitext(f)[0]: os.path.join(mask_dir, f)
           for f in common.list_entries(mask_dir, (".npy",))}
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
    common.atomic_save(path, lambda f: np.savez_compressed(f, **arrays))

  return write


def jobs(root: str, source: str, release: common.ReleaseFormat):
  jobs = common.video_jobs("training", os.path.join(root, "training", "videos"))
  frames_dir = os.path.join(root, "testing", "frames")
  names = common.list_entries(frames_dir, dirs=True)
  if not names:
    raise DataError(f"Folder {frames_dir!r} holds no video folders.")
  for name in names:
    video_dir = os.path.join(frames_dir, name)
    paths = [os.path.join(video_dir, f)
             for f in common.list_entries(video_dir, registry.IMAGE_EXTENSIONS)]
    if not paths:
      raise DataError(f"Video folder {video_dir!r} holds no frames.")
    jobs.append(common.VideoJob(split="testing", name=name, source=video_dir,
                          write=common.copy_frames(paths), num_frames=len(paths)))
  writer = label_writer(common.find_ground_truth(root, source, release), names)
  return jobs, writer
