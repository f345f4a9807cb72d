"""The training data of a run: videos, background, hold-out, and the clip datasets of every
worker."""

import dataclasses
from typing import Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from daml_tf import fileio
from daml_tf import config as config_lib
from daml_tf.training import distributed
from daml_tf import errors
from daml_tf import run_dir
from daml_tf.data import layout
from daml_tf.data import pipeline
from daml_tf.data import tfrecord


@dataclasses.dataclass(frozen=True)
class TrainingData:
  """What training reads, validated before the model is built.

  Attributes:
    videos: the frames-layout videos clips are cut from (empty when training from TFRecords).
    holdout_videos: the held-out tails of the training videos, for threshold calibration.
    background: float32 [H, W, C], the per-pixel mean of the training frames.
  """

  videos: Tuple[layout.Video, ...]
  holdout_videos: Tuple[layout.Video, ...]
  background: np.ndarray

def prepare_training_data(cfg: config_lib.Config, output_dir: str) -> TrainingData:
  """Lists and validates the training videos; loads or computes the background.

  Every check that can fail on bad data runs here, before the model is built.

  Args:
    cfg: the run's config.
    output_dir: where background.npy is cached (the model directory, or a non-chief worker's
      scratch folder).
  """
  fileio.makedirs(output_dir)
  if cfg.data.tfrecord_dir:
    if cfg.train.pseudo_speeds:
      raise errors.ConfigError(
          "--pseudo_anomaly_weight needs the frames layout (--data_dir): TFRecord shards hold "
          "clips at the training interval only.")
    if cfg.train.calibration_holdout:
      raise errors.ConfigError(
          "--calibration_holdout must be 0 with --tfrecord_dir: TFRecords hold whole training "
          "videos. Calibrate afterwards with python -m daml_tf.calibrate on held-out footage.")
    index = tfrecord.load_index(cfg.data.tfrecord_dir)
    tfrecord.check_index(index, cfg.data)
    return TrainingData(videos=(), holdout_videos=(),
                        background=tfrecord.load_background(cfg.data.tfrecord_dir))
  _, videos = layout.find_videos(cfg.data.dataset, cfg.data.data_dir, "training")
  layout.check_clip_length(videos, cfg.data.clip_span)
  videos, holdout = layout.split_holdout(videos, cfg.train.calibration_holdout,
                                         cfg.data.clip_span)
  background = pipeline.load_or_compute_background(
      run_dir.background_path(output_dir), videos, cfg.data.image_size, cfg.data.channels)
  return TrainingData(videos=tuple(videos), holdout_videos=tuple(holdout),
                      background=background)

def make_clip_data(cfg: config_lib.Config, data: TrainingData,
                   input_context: Optional[tf.distribute.InputContext] = None,
                   batches_drawn: int = 0) -> pipeline.ClipData:
  """The training clips, for one input pipeline of `input_context` (None: the only one),
  continuing after the `batches_drawn` batches a resumed run already had.

  With several input pipelines (multi-worker), each gets a disjoint share of the data and
  batches of the per-replica size. TFRecords restart their stream (a fresh shuffle) instead:
  their shuffle buffer holds decoded clips, so skipping would decode everything drawn before.
  """
  if cfg.data.tfrecord_dir:
    return tfrecord.training_dataset(cfg.data.tfrecord_dir, data.background, cfg.data,
                                     training=True, input_context=input_context)
  return pipeline.training_dataset(data.videos, data.background, cfg.data, training=True,
                                   input_context=input_context,
                                   pseudo_speeds=cfg.train.pseudo_speeds,
                                   batches_drawn=batches_drawn)

class PipelineOfWorker:
  """The dataset function of distribute_datasets_from_function, remembering its ClipData.

  Each worker builds its own share of the data (sharded by file or clip) at the per-replica
  batch size; the epoch length comes from the global clip count, the same on every worker.
  """

  def __init__(self, cfg: config_lib.Config, data: TrainingData, batches_drawn: int):
    self._cfg = cfg
    self._data = data
    self._batches_drawn = batches_drawn
    self.clip_data = None

  def __call__(self, input_context: tf.distribute.InputContext) -> tf.data.Dataset:
    self.clip_data = make_clip_data(self._cfg, self._data, input_context, self._batches_drawn)
    return self.clip_data.dataset

def distribute_data(strategy: tf.distribute.Strategy, cfg: config_lib.Config,
                     data: TrainingData, role: distributed.WorkerRole, batches_drawn: int = 0):
  """(distributed dataset, global steps per epoch) of the training clips, continuing after
  `batches_drawn` global batches."""
  if batches_drawn and cfg.data.tfrecord_dir:
    logging.info("Resumed on TFRecords: the data stream restarts with a fresh shuffle.")
  if distributed.is_multi_worker(strategy):
    pipeline_of_worker = PipelineOfWorker(cfg, data, batches_drawn)
    dataset = strategy.distribute_datasets_from_function(pipeline_of_worker)
    clip_data = pipeline_of_worker.clip_data
    num_clips = clip_data.total_clips
  else:
    clip_data = make_clip_data(cfg, data, batches_drawn=batches_drawn)
    dataset = strategy.experimental_distribute_dataset(clip_data.dataset)
    num_clips = clip_data.num_clips
  steps_per_epoch = clip_data.steps_per_epoch(cfg.data.clips_per_epoch)
  logging.info("%d training clips; %d steps of %d clips per epoch; %s on %d replica(s)%s",
               num_clips, steps_per_epoch, cfg.data.batch_size, cfg.train.strategy,
               strategy.num_replicas_in_sync, "" if role.is_chief else f" ({role.task})")
  return dataset, steps_per_epoch
