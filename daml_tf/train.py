"""Trains a DAML model: `python -m daml_tf.train --flagfile=configs/demo.cfg [--model_dir=...]`.

Training (`training.train`) is followed by the alarm threshold's calibration with the speed-up
check (daml_tf.evaluation.speedup_check), and the serving export, as --calibrate and --export ask.
"""

from absl import app
from absl import flags
from absl import logging

from daml_tf.evaluation import calibration
from daml_tf import cli
from daml_tf import cli_flags
from daml_tf import config as config_lib
from daml_tf.training import distributed
from daml_tf import run_dir
from daml_tf.evaluation import speedup_check
from daml_tf.training import loop as training
from daml_tf.inference import serving


def calibrate_and_export(cfg: config_lib.Config, trained: training.TrainedRun) -> None:
  """What follows training: the threshold and the speed-up check (chief only), the serving
  export, scratch clean-up.

  Every worker takes part in the export (saving may run collective ops); non-chiefs write into
  their scratch folders, which are removed at the end.
  """
  model_dir = cfg.train.model_dir
  threshold = None
  if trained.role.is_chief and cfg.train.calibrate:
    threshold = calibration.calibrate_after_training(cfg, trained.model, trained.data.videos,
                                                     trained.data.holdout_videos)
    speedup_check.check_after_training(cfg, trained.model, trained.data.videos,
                                       trained.data.holdout_videos)
  if cfg.train.export:
    # The export carries the threshold, so a deployed model raises the same alarms.
    stored = None if threshold is None else run_dir.load_threshold(model_dir)
    own_dir = distributed.own_dir(model_dir, trained.role)
    version_dir = serving.export_serving(trained.model, run_dir.export_dir(own_dir),
                                         data_cfg=cfg.data, threshold=stored,
                                         score=cfg.eval.score,
                                         motion_norm=run_dir.load_motion_norm(model_dir))
    if trained.role.is_chief:
      logging.info("Exported the serving SavedModel to %s", version_dir)
  distributed.remove_scratch(model_dir, trained.role)


def run(cfg: config_lib.Config, strategy=None) -> training.TrainedRun:
  """Trains, calibrates and exports: what `python -m daml_tf.train` does.

  Keep the result while the process lives: it holds the run's strategy (see
  daml_tf.training.distributed).
  """
  trained = training.train(cfg, strategy)
  calibrate_and_export(cfg, trained)
  return trained


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  with cli.mirrored_flags(flags.FLAGS, ("model_dir", "init_from")):
    cfg = cli.exit_on_expected_errors(cli_flags.config_from_flags, flags.FLAGS)
    multi_worker = cfg.train.strategy == "multi_worker"
    # A non-finite loss or a lost worker: the message says what happened and what to do.
    with cli.expected_errors_exit(skip_teardown=multi_worker):
      trained = run(cfg)
  logging.info("Training done at step %d; model directory %s", trained.metrics["global_step"],
               cfg.train.model_dir)
  # `trained` holds the tf.distribute runtime, which must outlive main: see daml_tf.training.distributed.
  cli.finish(skip_teardown=multi_worker)


if __name__ == "__main__":
  cli_flags.define_flags()
  app.run(main)
