"""Ranks trained runs of one recipe without labelled footage, by the speed-up check.

`python -m daml_tf.rank_runs --model_dirs=runs/s0,runs/s1,runs/s2 [--data_dir=...]
 [--output=ranking.json]`

For each run: how well its configured score tells its training footage played twice as fast
from the footage itself (daml_tf.evaluation.speedup_check; higher first), with the mean scores of the
normal and the sped-up clips. The check is recomputed (and its speedup_check.json
rewritten) rather than read, so runs trained before it existed, or whose data moved, rank the
same way.

Why the speed-up check and not the normal error: over 17 Ped2 runs differing only in their seed,
the check tracked the test AUC (Spearman 0.53 per-video, 0.91 pooled raw; the best of three
seeds by it gained 0.008 and 0.019 on average), while the mean normal error did not (-0.16 and
-0.39; picking by it lost 0.001 and 0.002). Rank runs of one recipe on one camera's footage;
train three seeds and keep the first (README "Choosing a run without test labels").
"""

import json
import os

from absl import app
from absl import flags
from absl import logging

from daml_tf.evaluation import calibration
from daml_tf import cli
from daml_tf import errors
from daml_tf import run_dir
from daml_tf.evaluation import speedup_check

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  flags.DEFINE_list("model_dirs", None, "Training run directories of one recipe.",
                    flag_values=flag_values)
  flags.DEFINE_string("data_dir", "", "Where the runs' dataset is now, if it moved since "
                      "training.", flag_values=flag_values)
  flags.DEFINE_integer("speedup", speedup_check.DEFAULT_SPEEDUP, "How many times faster the "
                       "sped-up clips play.", flag_values=flag_values)
  flags.DEFINE_string("output", "", "Also write the ranking as JSON here.",
                      flag_values=flag_values)
  flags.mark_flag_as_required("model_dirs", flag_values=flag_values)


def check_run(model_dir: str, data_dir: str, speedup: int) -> dict:
  """The ranking row of one run: its speed-up check and normal-score statistics."""
  cfg, model = run_dir.restore_run(model_dir, data_dir)
  training_videos, holdout_videos = calibration.training_and_holdout(cfg)
  result = speedup_check.check_footage(model, cfg, training_videos, holdout_videos, model_dir,
                                       speedup)
  if result is None:
    raise errors.DataError(f"{model_dir}: no footage of the run is long enough for a clip at "
                           f"{speedup}x speed.")
  return {"model_dir": model_dir, "speedup_auc": round(result.auc, 5),
          "normal_mean": round(result.normal_mean, 6),
          "sped_up_mean": round(result.sped_up_mean, 6), "score": result.score,
          "held_out": result.held_out, "normal_clips": result.normal_clips}


def rank(rows):
  """Highest speed-up AUC first (the earlier run on a tie)."""
  return sorted(rows, key=lambda row: -row["speedup_auc"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  rows = [cli.exit_on_expected_errors(check_run, os.path.expanduser(model_dir),
                                      os.path.expanduser(FLAGS.data_dir), FLAGS.speedup)
          for model_dir in FLAGS.model_dirs]
  ranked = rank(rows)
  for position, row in enumerate(ranked, start=1):
    print(f"{position}. {row['model_dir']}: speed-up AUC {row['speedup_auc']:.4f}, normal "
          f"mean {row['normal_mean']:.5g} over {row['normal_clips']} "
          f"{'held-out' if row['held_out'] else 'training'} clips", flush=True)
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump(ranked, f, indent=2)
    logging.info("Wrote %s", FLAGS.output)
  cli.finish()


if __name__ == "__main__":
  define_flags()
  app.run(main)
