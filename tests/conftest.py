"""Shared fixtures: tiny datasets in the frames layout, written to tmp_path."""

import os
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image
import pytest

DEFAULT_VIDEOS = {"training": {"01": 12, "02": 10}, "testing": {"01": 9, "02": 11}}


def write_frames_dataset(root: str,
                         videos: Optional[Dict[str, Dict[str, int]]] = None,
                         size: Tuple[int, int] = (24, 32),
                         ext: str = ".png",
                         rgb: bool = False,
                         seed: int = 0) -> str:
  """Writes random frames as <root>/<split>/frames/<video>/<000..>.<ext>.

  Args:
    root: the dataset root to create.
    videos: {split: {video name: number of frames}}.
    size: (height, width) of the frames.
    ext: image file extension (any PIL can write).
    rgb: 3-channel frames instead of gray.
    seed: NumPy seed of the pixel values.

  Returns:
    root.
  """
  rng = np.random.RandomState(seed)
  shape = size + (3,) if rgb else size
  for split, counts in (DEFAULT_VIDEOS if videos is None else videos).items():
    for name, num_frames in counts.items():
      folder = os.path.join(root, split, "frames", name)
      os.makedirs(folder, exist_ok=True)
      for i in range(num_frames):
        pixels = rng.randint(0, 256, size=shape).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"{i:03d}{ext}"))
  return root


@pytest.fixture
def frames_dataset(tmp_path):
  """Factory writing a frames-layout dataset under tmp_path; see write_frames_dataset."""

  def make(name: str = "dataset", **kwargs) -> str:
    return write_frames_dataset(str(tmp_path / name), **kwargs)

  return make
