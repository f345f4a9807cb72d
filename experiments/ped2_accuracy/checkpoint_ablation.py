"""How a run's AUC moves over its checkpoints: the learning curve, and the finetune epoch.

    python -m daml_tf.train --flagfile=configs/ped2_cpu.cfg --data_dir=~/datasets \
        --model_dir=runs/curve_s20 --finetune_trains=motion --seed=20 \
        --checkpoint_every_steps=0 --checkpoints_to_keep=0
    .venv/bin/python -m experiments.ped2_accuracy.checkpoint_ablation --data_dir=~/datasets \
        --model_dirs=runs/curve_s20 --fresh --output=curve.json

With `--checkpoint_every_steps=0 --checkpoints_to_keep=0` a run keeps one checkpoint per epoch.
For each checkpoint (or those of `--steps`), the test split is scored with the paper's
`latent_mean` and with `latent_top5` by the motion model of that checkpoint (`own`), and with
`--fresh` also by a new `MotionModel` trained on that encoder's frozen training codes
(`experiments/ped2_accuracy/horizon_ablation.py`'s `fit_motion`: 5 epochs, the last at a tenth of the rate), which
tells the encoder's progress from the motion model's. Scored from the first frame a clip can
predict, like `daml_tf.evaluate`, so the last checkpoint's `own` row is the run's evaluation.
"""

import json
import os
import re
from typing import List, Tuple

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from experiments.ped2_accuracy import horizon_ablation as horizon
from daml_tf.evaluation import scoring as evaluation
from daml_tf import run_dir
from daml_tf.data import layout
from daml_tf.models import build


FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  flags.DEFINE_list("model_dirs", None, "Training run directories.", flag_values=flag_values)
  flags.DEFINE_string("data_dir", "", "Where the runs' dataset is (default: as trained).",
                      flag_values=flag_values)
  flags.DEFINE_list("steps", [], "Only the checkpoints of these steps (default: every one).",
                    flag_values=flag_values)
  flags.DEFINE_bool("fresh", False, "Also score a fresh motion model per checkpoint (~30 s).",
                    flag_values=flag_values)
  flags.DEFINE_string("output", None, "The JSON file of results.", flag_values=flag_values)
  flags.mark_flags_as_required(["model_dirs", "output"], flag_values=flag_values)


def checkpoints_of(model_dir: str) -> List[Tuple[int, str]]:
  """(step, checkpoint prefix) of every checkpoint in the run's checkpoints/, by step."""
  prefixes = tf.io.gfile.glob(os.path.join(run_dir.checkpoint_dir(model_dir), "ckpt-*.index"))
  found = [(int(re.search(r"ckpt-(\d+)\.index$", p).group(1)), p[:-len(".index")])
           for p in prefixes]
  return sorted(found)


def score_checkpoint(cfg, prefix: str, train_videos, test_videos, labels, fresh: bool):
  """{"own|<score>": metrics row[, "fresh|<score>": ...]} of one checkpoint."""
  data = cfg.data
  model = build.float32_model(cfg)
  tf.train.Checkpoint(model=model).restore(prefix).expect_partial()
  test_codes = horizon.encode(model, cfg, test_videos)
  first_target = data.clip_span
  test_labels = [video_labels[first_target:] for video_labels in labels]
  motions = {"own": model.motion}
  if fresh:
    motions["fresh"] = horizon.fit_motion(
        horizon.encode(model, cfg, train_videos), data.time_steps, data.interval, data.delta,
        cfg.model.weight_decay, epochs=5, learning_rate=1e-3, seed=0)
  rows = {}
  for name, motion in motions.items():
    score = horizon.clip_scorer(motion)
    per_video = [score(codes, horizon.clips_from(len(codes), data.time_steps, data.interval,
                                                 data.delta, first_target))
                 for codes in test_codes]
    for score_name in horizon.SCORES:
      rows[f"{name}|{score_name}"] = horizon.metrics(
          [video[score_name] for video in per_video], test_labels)
  return rows


def main(argv):
  del argv
  results = {}
  for model_dir in FLAGS.model_dirs:
    cfg = run_dir.load_run_config(model_dir, FLAGS.data_dir)
    _, train_videos = layout.find_videos(cfg.data.dataset, cfg.data.data_dir, "training")
    train_videos, _ = layout.split_holdout(train_videos, cfg.train.calibration_holdout,
                                           cfg.data.clip_span)
    test_videos, labels = evaluation.test_split(cfg)
    wanted = {int(step) for step in FLAGS.steps}
    results[model_dir] = {}
    for step, prefix in checkpoints_of(model_dir):
      if wanted and step not in wanted:
        continue
      results[model_dir][str(step)] = score_checkpoint(cfg, prefix, train_videos, test_videos,
                                                       labels, FLAGS.fresh)
      logging.info("%s step %d: %s", model_dir, step, results[model_dir][str(step)])
      # Written after every checkpoint, so a long list can be stopped and keep its results.
      with open(FLAGS.output, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
