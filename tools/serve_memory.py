"""Resident memory of a running `daml_tf.serve` process as its cameras' frames go by.

Starts the service on a YAML of --cameras cameras (each reading --video, a long file, as fast as
the service takes frames), samples the child's RSS (/proc/<pid>/status) whenever the first
camera's scores.csv passes a checkpoint, and prints the growth per frame per camera and what it
means for a day at --camera_fps.

  PYTHONPATH=. .venv/bin/python tools/serve_memory.py --video=long.mp4 --model_dir=pretrained/ped2_cpu \
      --cameras=2 --checkpoints=1000,5000,10000,20000 --output=docs/bench/serve_memory.json
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

flags.DEFINE_string("video", None, "A long video every camera reads.", required=True)
flags.DEFINE_string("model_dir", None, "The model.", required=True)
flags.DEFINE_integer("cameras", 2, "Cameras of the service.")
flags.DEFINE_list("checkpoints", ["1000", "5000", "10000", "20000"], "Frames per camera.")
flags.DEFINE_float("camera_fps", 10.0, "For the growth per day.")
flags.DEFINE_string("output", "", "Write the results as JSON here.")
FLAGS = flags.FLAGS


def _rss_mib(pid):
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024.0
  raise RuntimeError("no VmRSS")


def _rows(path):
  try:
    with open(path, "rb") as f:
      return max(sum(1 for _ in f) - 1, 0)
  except FileNotFoundError:
    return 0


def _growth(first, last, cameras, camera_fps):
  """(KiB per frame per camera, MB per day per camera at camera_fps) between two samples."""
  # Every camera scored that many frames: the growth is shared among them.
  kib = ((last["rss_mib"] - first["rss_mib"]) * 1024 /
         max(last["frames_per_camera"] - first["frames_per_camera"], 1) / cameras)
  return kib, kib * 1024 * camera_fps * 86400 / 1e6


def summarize(samples, cameras, camera_fps):
  """The growth over the whole run and over its second half (the steady state: the first
  thousands of frames fill caches, queues and the allocator's pools)."""
  overall = _growth(samples[0], samples[-1], cameras, camera_fps)
  steady = _growth(samples[len(samples) // 2], samples[-1], cameras, camera_fps)
  return {"growth_kib_per_frame_per_camera": overall[0],
          "growth_mb_per_day_per_camera": overall[1],
          "steady_from_frames": samples[len(samples) // 2]["frames_per_camera"],
          "steady_growth_kib_per_frame_per_camera": steady[0],
          "steady_growth_mb_per_day_per_camera": steady[1]}


def main(argv):
  del argv
  checkpoints = sorted(int(c) for c in FLAGS.checkpoints)
  with tempfile.TemporaryDirectory() as work:
    lines = ["cameras:"]
    for i in range(FLAGS.cameras):
      lines += [f"  cam{i}:", f"    input: {os.path.abspath(FLAGS.video)}",
                f"    model_dir: {FLAGS.model_dir}"]
    lines += ["record:", f"  output_dir: {work}/out"]
    config = os.path.join(work, "cameras.yaml")
    with open(config, "w") as f:
      f.write("\n".join(lines) + "\n")
    log = open(os.path.join(work, "serve.log"), "w")
    child = subprocess.Popen([sys.executable, "-m", "daml_tf.serve", f"--config={config}",
                              f"--max_frames={checkpoints[-1]}", "--log_every=0"],
                             stdout=log, stderr=subprocess.STDOUT)
    scores = os.path.join(work, "out", "cam0", "scores.csv")
    samples, start = [], time.time()
    for checkpoint in checkpoints:
      while _rows(scores) < checkpoint and child.poll() is None:
        time.sleep(0.02)
      if child.poll() is not None:
        break
      samples.append({"frames_per_camera": checkpoint, "rss_mib": _rss_mib(child.pid),
                      "seconds": time.time() - start})
      print(json.dumps(samples[-1]), flush=True)
    child.wait()
  result = {"cameras": FLAGS.cameras, "model_dir": FLAGS.model_dir, "samples": samples,
            **summarize(samples, FLAGS.cameras, FLAGS.camera_fps)}
  print(json.dumps(result), flush=True)
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  app.run(main)
