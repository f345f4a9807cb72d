"""Event-level evaluation of the camera service on UCSD Ped2 (see README.md beside this file).

Runs `python -m daml_tf.serve` itself, one camera per video (frames folders read in full, 10
frames/s), so the alarms counted are exactly those the service raises (masks, smoothing, debounce,
hysteresis, cooldown, scene-change guard); then scores each camera's per-frame alarm column
(scores.csv) against the frame labels with daml_tf.service.event_metrics.

  .venv/bin/python -m experiments.event_level.run --model_dir=pretrained/ped2_cpu \
      --labels_csv=/tmp/ped2_eval_online/scores.csv --data_dir=~/datasets/ped2 \
      [--heldout=04,08,12,16] --output=experiments/event_level/results/shipped.json

--labels_csv is `evaluate --normalize=none`'s scores.csv of the same model: its `label` column
gives each scored frame's label (frames it has no row for are not counted). Held-out training
videos are normal throughout; with --brightness_step=80 they are also replayed with every frame
after the middle made 80 gray levels brighter, to check the scene-change guard.
"""

import csv
import json
import os
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
import numpy as np
from PIL import Image

from daml_tf.data import video_io
from daml_tf.service import event_metrics

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "The model (a run directory).", required=True)
flags.DEFINE_string("labels_csv", None, "evaluate --normalize=none's scores.csv of the model.",
                    required=True)
flags.DEFINE_string("data_dir", "~/datasets/ped2", "Ped2 in the frames layout.")
flags.DEFINE_list("heldout", [], "Training videos the model did not train on (normal).")
flags.DEFINE_integer("brightness_step", 0, "Also replay the held-out videos with this many gray "
                     "levels added to every frame after the middle.")
flags.DEFINE_string("output", "", "Write the results as JSON here.")
flags.DEFINE_string("score", "", "The cameras' score (default: the one the model's threshold "
                    "was calibrated for); e.g. motion_weighted for experiments/motion_evidence.")
FPS = 10.0
# "before": no controls; "after": the defaults the rule in README.md fixed before the runs.
SETTINGS = {
    "before": {"min_frames": 1, "end_ratio": 1.0, "cooldown_s": 0.0},
    "after": {"min_frames": 3, "end_ratio": 0.8, "cooldown_s": 5.0},
}


def _yaml(cameras, output_dir, model_dir, alarm):
  lines = ["cameras:"]
  for name, folder in cameras.items():
    lines += [f"  \"{name}\":", f"    input: {folder}", f"    model_dir: {model_dir}",
              f"    fps: {FPS:g}"]
    if FLAGS.score:
      lines.append(f"    score: {FLAGS.score}")
  lines += ["record:", f"  output_dir: {output_dir}", "  pre_capture_s: 1",
            "  post_capture_s: 1", "alarm:"]
  lines += [f"  {key}: {value}" for key, value in alarm.items()]
  return "\n".join(lines) + "\n"


def _serve(cameras, model_dir, alarm, work):
  output_dir = os.path.join(work, "out")
  config = os.path.join(work, "cameras.yaml")
  with open(config, "w") as f:
    f.write(_yaml(cameras, output_dir, model_dir, alarm))
  result = subprocess.run([sys.executable, "-m", "daml_tf.serve", f"--config={config}",
                           "--log_every=0"], capture_output=True, text=True, check=False)
  if result.returncode:
    raise RuntimeError(result.stderr[-3000:])
  per_camera = {}
  for name in cameras:
    with open(os.path.join(output_dir, name, "scores.csv")) as f:
      alarms = {int(r["frame"]): r["alarm"] in ("1", "True", "true") for r in csv.DictReader(f)}
    with open(os.path.join(output_dir, name, "events.jsonl")) as f:
      events = [json.loads(line) for line in f]
    per_camera[name] = (alarms, events)
  return per_camera


def _labels(path):
  labels = {}
  with open(path) as f:
    for row in csv.DictReader(f):
      labels.setdefault(row["video"], {})[int(row["frame"])] = int(row["label"])
  return labels


def _alarm_intervals(events, first_frame):
  """[start, end) of each alarm of events.jsonl, in frames from first_frame: an alarm the
  cooldown merged is one interval, as the operator sees it (one id, one notification)."""
  intervals = []
  for event in events:
    if event["event_type"] == "alarm_end":
      intervals.append((event["start_frame"] - first_frame, event["end_frame"] + 1 - first_frame))
  return intervals


def _metrics(per_camera, labels):
  """EventMetrics over the frames that have labels (a scored frame of evaluate)."""
  label_arrays, alarm_arrays = [], []
  for name, (_, events) in per_camera.items():
    frames = sorted(labels[name])
    label_arrays.append(np.array([labels[name][i] for i in frames]))
    alarm_arrays.append(_alarm_intervals(events, frames[0]))
  return event_metrics.evaluate_events(label_arrays, alarm_arrays, FPS).to_dict()


def _brightened(folder, target, step):
  os.makedirs(target, exist_ok=True)
  items = list(video_io.iter_frames(folder))
  for index, _, frame in items:
    if index >= len(items) // 2:
      frame = np.clip(frame.astype(np.int16) + step, 0, 255).astype(np.uint8)
    Image.fromarray(frame).save(os.path.join(target, f"{index:03d}.png"))
  return len(items) // 2


def main(argv):
  del argv
  data_dir = os.path.expanduser(FLAGS.data_dir)
  labels = _labels(FLAGS.labels_csv)
  test = {v: os.path.join(data_dir, "testing", "frames", v) for v in sorted(labels)}
  heldout = {f"train{v}": os.path.join(data_dir, "training", "frames", v) for v in FLAGS.heldout}
  for name, folder in heldout.items():
    count = len(list(video_io.iter_frames(folder)))
    labels[name] = {i: 0 for i in range(count)}
  results = {"model_dir": FLAGS.model_dir, "score": FLAGS.score or "(the threshold's)",
             "fps": FPS, "settings": SETTINGS, "runs": {}}
  for setting, alarm in SETTINGS.items():
    with tempfile.TemporaryDirectory() as work:
      per_camera = _serve({**test, **heldout}, FLAGS.model_dir, alarm, work)
    entry = {"test": _metrics({k: per_camera[k] for k in test}, labels)}
    if heldout:
      entry["heldout"] = _metrics({k: per_camera[k] for k in heldout}, labels)
      entry["test_and_heldout"] = _metrics(per_camera, labels)
    results["runs"][setting] = entry
    print(setting, json.dumps(entry), flush=True)
  if heldout and FLAGS.brightness_step:
    with tempfile.TemporaryDirectory() as work:
      folders, steps = {}, {}
      for name, folder in heldout.items():
        steps[name] = _brightened(folder, os.path.join(work, "frames", name),
                                  FLAGS.brightness_step)
        folders[name] = os.path.join(work, "frames", name)
      per_camera = _serve(folders, FLAGS.model_dir, SETTINGS["after"], work)
    check = {}
    for name, (alarms, events) in per_camera.items():
      check[name] = {
          "step_frame": steps[name],
          "scene_changes": [e["frame"] for e in events if e["event_type"] == "scene_change"],
          "alarms": sum(e["event_type"] == "alarm_start" for e in events),
          "alarm_frames": int(sum(alarms.values()))}
    results["brightness_step"] = {"gray_levels": FLAGS.brightness_step, "videos": check}
    print("brightness", json.dumps(check), flush=True)
  if FLAGS.output:
    os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
    with open(FLAGS.output, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
