"""Sets a trained model's alarm threshold from normal footage.

`python -m daml_tf.calibrate --model_dir=runs/cam1 [--videos_dir=...] [--quantile=0.995]`

Writes <model_dir>/threshold.json, which `daml_tf.detect` uses (and, for a score of motion
evidence, motion_norm.json: the optical flow's normalisation on the same footage). See daml_tf.evaluation.calibration.
"""

from absl import app
from absl import flags
from absl import logging

from daml_tf.evaluation import calibration
from daml_tf import cli

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  flags.DEFINE_string("model_dir", None, "A training run's directory (config.json, "
                      "checkpoints/).", flag_values=flag_values)
  flags.DEFINE_string("videos_dir", "", "Normal footage in the frames layout "
                      "(<dir>/training/frames/<video>/); default: the frames the run held out "
                      "of training (--calibration_holdout), else its training frames.",
                      flag_values=flag_values)
  flags.DEFINE_string("data_dir", "", "Where the run's dataset is now, if it moved since "
                      "training.", flag_values=flag_values)
  flags.DEFINE_float("quantile", None, "Threshold = this quantile of the normal scores "
                     "(default: the run's --calibration_quantile).", flag_values=flag_values)
  flags.DEFINE_string("score", "", "The score to calibrate for (default: the run's --score; "
                      "see daml_tf/models/scores.py).", flag_values=flag_values)
  flags.DEFINE_float("flow_scale", None, "For a score of motion evidence: the fraction of the "
                     "input's resolution the optical flow is fitted and computed at (default: "
                     "the run's --flow_scale).", flag_values=flag_values)
  flags.mark_flag_as_required("model_dir", flag_values=flag_values)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  with cli.mirrored_flags(FLAGS, ("model_dir",)):
    threshold = cli.exit_on_expected_errors(
        calibration.calibrate_model_dir, FLAGS.model_dir, videos_dir=FLAGS.videos_dir,
        data_dir=FLAGS.data_dir, quantile=FLAGS.quantile, score=FLAGS.score,
        flow_scale=FLAGS.flow_scale)
  logging.info("threshold=%.6g", threshold)
  cli.finish()


if __name__ == "__main__":
  define_flags()
  app.run(main)
