"""Resident memory of the detection loop on an endless synthetic camera: RSS after N1 and N2
frames, with daml_tf.inference.detection.detect_frames (the loop `python -m daml_tf.detect`
runs: scores.csv and events.jsonl appended per frame, the bounded plot window, alarm events).

    PYTHONPATH=. .venv/bin/python tools/detect_memory.py --model_dir=pretrained/ped2_cpu \
        [--checkpoints=1000,20000] [--height=240 --width=360] [--output_dir=/tmp/detect_memory]

Prints one JSON line: the model, the frame size, and {frames: RSS MiB} at each checkpoint
(VmRSS of /proc/self/status, read as the frame after the checkpoint is pulled from the source,
so after exactly that many frames were scored and written).
"""

import itertools
import json
import os
import tempfile

from absl import app
from absl import flags
import numpy as np

from daml_tf.inference import detection
from daml_tf.inference.streaming import StreamingDetector

flags.DEFINE_string("model_dir", "pretrained/ped2_cpu", "A run or an export.")
flags.DEFINE_list("checkpoints", ["1000", "20000"], "Frame counts at which RSS is read.")
flags.DEFINE_integer("height", 240, "Synthetic frame height.")
flags.DEFINE_integer("width", 360, "Synthetic frame width.")
flags.DEFINE_string("output_dir", "", "Where the loop writes (default: a temporary folder).")
FLAGS = flags.FLAGS


def rss_mib() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  raise RuntimeError("no VmRSS in /proc/self/status")


def endless_camera(height, width, checkpoints, readings, fps=25.0):
  """(index, timestamp, frame) forever: 64 synthetic frames (a bright square moving over a
  textured scene) looped, with RSS read when `checkpoints` frames have been consumed."""
  yy, xx = np.mgrid[0:height, 0:width]
  scene = 100 + 50 * np.sin(xx / 9.0) + 30 * np.cos(yy / 7.0)
  rng = np.random.default_rng(0)
  loop = []
  for t in range(64):
    image = scene.copy()
    x = (5 * t) % (width - 20)
    image[height // 3:height // 3 + 20, x:x + 20] = 240
    image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    loop.append(np.repeat(image[..., None], 3, axis=-1))
  for index in itertools.count():
    if index in checkpoints:
      readings[index] = round(rss_mib(), 1)
    yield index, index / fps, loop[index % len(loop)]


def main(argv):
  del argv
  checkpoints = sorted(int(c) for c in FLAGS.checkpoints)
  output_dir = FLAGS.output_dir or tempfile.mkdtemp(prefix="detect_memory_")
  os.makedirs(output_dir, exist_ok=True)
  detector = StreamingDetector.from_model_dir(FLAGS.model_dir)
  readings = {}
  # One frame past the last checkpoint, so the source reads RSS after the last one is scored.
  summary = detection.detect_frames(
      detector, endless_camera(FLAGS.height, FLAGS.width, set(checkpoints), readings),
      output_dir, "synthetic", max_frames=checkpoints[-1] + 1, log_every=1000)
  print(json.dumps({"model_dir": FLAGS.model_dir, "frame": [FLAGS.height, FLAGS.width, 3],
                    "frames": summary.frames, "mean_fps": round(summary.mean_fps, 1),
                    "alarms": summary.alarms, "events": summary.events,
                    "rss_mib": readings, "output_dir": output_dir}))


if __name__ == "__main__":
  app.run(main)
