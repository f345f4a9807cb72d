"""How many cameras one service process scores: throughput of `daml_tf.serve` on file inputs.

Every camera reads the same video file as fast as the service takes its frames (decoding on the
camera's reader thread, as for a live input), so the total frames/s of the run is what the
process can score; divided by a camera's frame rate it is the number of such cameras one process
sustains. With --models=2, half the cameras use the second model (another detector, same
process).

  PYTHONPATH=. .venv/bin/python tools/serve_capacity.py --video=ped2_test04.mp4 \
      --model_dirs=pretrained/ped2_cpu,runs/other --cameras=1,2,4,8 --output=docs/bench/serve_capacity.json
"""

import json
import os
import re
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

flags.DEFINE_string("video", None, "The camera video every camera reads.", required=True)
flags.DEFINE_list("model_dirs", None, "One or two models.", required=True)
flags.DEFINE_list("cameras", ["1", "2", "4", "8"], "Camera counts to run.")
flags.DEFINE_integer("max_frames", 180, "Frames per camera.")
flags.DEFINE_float("camera_fps", 10.0, "The frame rate a camera delivers.")
flags.DEFINE_string("output", "", "Write the results as JSON here.")
FLAGS = flags.FLAGS
_TOTAL = re.compile(r"cameras=(\d+) frames=(\d+) total_fps=([\d.]+)")


def write_config(count, model_dirs, work, extra_lines=()):
  """work/cameras.yaml: `count` cameras cam0.. reading --video, the models in turn, output in
  work/out, then extra_lines (another section); its path. tools/http_viewers.py uses it too."""
  lines = ["cameras:"]
  for i in range(count):
    lines += [f"  cam{i}:", f"    input: {os.path.abspath(FLAGS.video)}",
              f"    model_dir: {model_dirs[i % len(model_dirs)]}"]
  lines += ["record:", f"  output_dir: {work}/out", *extra_lines]
  config = os.path.join(work, "cameras.yaml")
  with open(config, "w") as f:
    f.write("\n".join(lines) + "\n")
  return config


def _run(count, model_dirs, work):
  config = write_config(count, model_dirs, work)
  result = subprocess.run([sys.executable, "-m", "daml_tf.serve", f"--config={config}",
                           f"--max_frames={FLAGS.max_frames}", "--log_every=0"],
                          capture_output=True, text=True, check=False)
  match = _TOTAL.search(result.stderr)
  if result.returncode or not match:
    raise RuntimeError(result.stderr[-3000:])
  total_fps = float(match.group(3))
  return {"cameras": count, "models": len(model_dirs), "frames": int(match.group(2)),
          "total_frames_per_second": total_fps,
          "cameras_sustained": total_fps / FLAGS.camera_fps}


def main(argv):
  del argv
  rows = []
  for models in ([FLAGS.model_dirs[:1]] + ([FLAGS.model_dirs[:2]]
                                           if len(FLAGS.model_dirs) > 1 else [])):
    for count in (int(c) for c in FLAGS.cameras):
      if count < len(models):
        continue
      with tempfile.TemporaryDirectory() as work:
        row = _run(count, models, work)
      rows.append(row)
      print(json.dumps(row), flush=True)
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump({"video": FLAGS.video, "model_dirs": FLAGS.model_dirs,
                 "camera_fps": FLAGS.camera_fps, "rows": rows}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
