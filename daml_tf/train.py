"""Trains a DAML model: `python -m daml_tf.train --flagfile=configs/demo.cfg [--model_dir=...]`."""

from absl import app
from absl import flags
from absl import logging

from daml_tf import cli
from daml_tf import flags as daml_flags
from daml_tf import training
from daml_tf.data import layout


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  cfg = cli.exit_on_expected_errors(daml_flags.config_from_flags, flags.FLAGS)
  multi_worker = cfg.train.strategy == "multi_worker"
  try:
    results = cli.exit_on_expected_errors(training.train, cfg)
  except training.TrainingError as error:
    # A non-finite loss or a lost worker: the message says what happened and what to do.
    logging.error("%s", error)
    layout.exit_process(1, skip_teardown=multi_worker)
  logging.info("Training done at step %d; model directory %s", results["global_step"],
               cfg.train.model_dir)
  # The training's tf.distribute runtime must outlive main: see training.train.
  cli.finish(skip_teardown=multi_worker)


if __name__ == "__main__":
  daml_flags.define_flags()
  app.run(main)
