"""What the optical flow of the motion scores costs per frame at common camera resolutions.

  PYTHONPATH=. .venv/bin/python tools/flow_cost.py [--frames=100] [--output=docs/bench/flow_cost.json]

Times data.motion_maps.MotionTracker.update (gray conversion, resize to the flow scale, OpenCV
DIS ultrafast, pooling to the 32x48 grid, normalisation) on a synthetic scene with a moving
textured square, for 240x360 (UCSD Ped2), 480x640, 720p and 1080p RGB frames at flow scales 1,
0.5 and 0.25, with OpenCV's default threads (as detection runs it). The benchmark
(`python -m daml_tf.benchmark --video=... --flow_scales=...`) times it inside detection.
"""

import json
import time

from absl import app
from absl import flags
import cv2
import numpy as np

from daml_tf.data import motion_maps

FLAGS = flags.FLAGS
flags.DEFINE_integer("frames", 100, "Frames timed per resolution and scale.")
flags.DEFINE_string("output", "", "Write the results as JSON here.")
RESOLUTIONS = ((240, 360), (480, 640), (720, 1280), (1080, 1920))
SCALES = (1.0, 0.5, 0.25)
GRID = (32, 48)


def scene(height: int, width: int, count: int) -> list:
  """RGB frames: a textured background and a textured square moving 1% of the width a frame."""
  rng = np.random.default_rng(0)
  background = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), np.uint8), (5, 5), 0)
  side = max(8, height // 6)
  square = rng.integers(0, 255, (side, side, 3), np.uint8)
  frames = []
  for t in range(count):
    frame = background.copy()
    left = int(t * width / 100) % (width - side)
    frame[height // 3:height // 3 + side, left:left + side] = square
    frames.append(frame)
  return frames


def main(argv):
  del argv
  results = []
  for height, width in RESOLUTIONS:
    frames = scene(height, width, FLAGS.frames + 1)
    for scale in SCALES:
      norm = motion_maps.MotionNorm(scale=scale, grid=GRID, row_scale=(1.0,) * GRID[0])
      tracker = motion_maps.MotionTracker(norm)
      tracker.update(frames[0])
      start = time.perf_counter()
      for frame in frames[1:]:
        tracker.update(frame)
      ms = 1000.0 * (time.perf_counter() - start) / FLAGS.frames
      results.append({"frame": [height, width], "scale": scale, "ms_per_frame": round(ms, 3)})
      print(f"{height}x{width} at {scale:g}: {ms:.2f} ms per frame", flush=True)
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump({"grid": GRID, "opencv_threads": cv2.getNumThreads(), "results": results}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
