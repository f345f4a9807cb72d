"""Evaluates a trained model on the test split: frame-level AUC and EER.

`python -m daml_tf.evaluate --flagfile=configs/demo.cfg --model_dir=... [--output_dir=...]`
"""

from absl import app
from absl import flags
from absl import logging

from daml_tf import cli
from daml_tf.evaluation import scoring as evaluation
from daml_tf import cli_flags


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  with cli.mirrored_flags(flags.FLAGS, ("model_dir", "output_dir")):
    cfg = cli.exit_on_expected_errors(cli_flags.config_from_flags, flags.FLAGS)
    metrics = cli.exit_on_expected_errors(evaluation.evaluate, cfg)
  logging.info("micro_auc=%.4f macro_auc=%.4f eer=%.4f (%d scored frames, normalize=%s)",
               metrics["micro_auc"], metrics["macro_auc"], metrics["eer"],
               metrics["num_scored_frames"], metrics["normalize"])
  # The one line a user reads: printed plainly so it survives any logging setup.
  print(f"micro_auc={metrics['micro_auc']:.4f}")
  cli.finish()


if __name__ == "__main__":
  cli_flags.define_flags()
  app.run(main)
