"""Command-line flags of the entry points, defined in one place and turned into a Config once.

Entry points call `define_flags()` before `app.run` and `config_from_flags(FLAGS)` in `main`;
nothing reads FLAGS anywhere else. Flag names equal the config field names, except where a name
is shared between sections (`eval_batch_size`).
"""

import dataclasses

from absl import flags

from daml_tf import config as config_lib
from daml_tf.data import registry

# Flags whose name differs from the config field they set: flag name -> (section, field).
_RENAMED = {"eval_batch_size": ("eval", "batch_size"), "plots": ("eval", "plots")}

_HELP = {
    "dataset": f"Dataset name: one of {', '.join(registry.dataset_names())}.",
    "data_dir": "Dataset root (holding training/ and testing/) or a folder holding <dataset>/.",
    "image_height": "Model input height (0: the dataset's default).",
    "image_width": "Model input width (0: the dataset's default).",
    "channels": "1 (gray) or 3 (RGB); 0: the dataset's default.",
    "time_steps": "k, input frames per clip (0: the dataset's default).",
    "interval": "Frames between consecutive input frames (0: the dataset's default).",
    "delta": "Frames from the last input to the target frame (0: the dataset's default).",
    "batch_size": "Global training batch size, in clips.",
    "frame_cache": "memory: decode every frame once and cut clips from RAM; none: decode per clip.",
    "clips_per_epoch": "Training clips per epoch (0: every clip once).",
    "label_file": "Frame-label file of the test split (default: the dataset's).",
    "tfrecord_dir": ("Train from the sharded TFRecords written by daml_tf.data.to_tfrecord "
                     "(any tf.io.gfile path: local, s3://, gs://, hdfs://)."),
    "seed": "Random seed for shuffling and initialisation.",
    "levels": "U-Net levels.",
    "feature_root": "Channels of the first U-Net level, doubled per level.",
    "max_channels": "Channel cap of the U-Net levels.",
    "leaky_relu_slope": "Negative slope of the LeakyReLUs.",
    "weight_decay": "gamma: weight of the L2 kernel regularisation.",
    "latent_loss_trains_encoder": ("Let the latent loss update the encoder (the paper); "
                                   "--nolatent_loss_trains_encoder trains it by reconstruction "
                                   "only."),
    "motion_bottleneck": ("Width of the motion model's Conv3D blocks (0: the latent code's "
                          "channels, as in the paper); smaller adds 1x1 reduce/expand convs."),
    "motion": ("Motion model, by its name in daml_tf.models.build.MOTION_MODELS (conv3d: the "
               "paper's Conv3D blocks; two_horizon: two of them, on the newest and the oldest "
               "codes, their errors added; two_level: one on the finest encoder level of the "
               "newest codes, one on the latent codes of the oldest, their errors added)."),
    "motion_head_steps": ("Codes per head of --motion=two_horizon or two_level (0: --time_steps "
                          "- 2); the head on the oldest codes predicts (time_steps - head_steps) "
                          "* interval frames further."),
    "model_dir": "Checkpoints, TensorBoard logs, background, resolved config and export.",
    "train_epochs": "Epochs of the train phase.",
    "finetune_epochs": "Epochs of the finetune phase.",
    "train_lambda_r": "Reconstruction weight of the train phase.",
    "train_lambda_p": "Latent prediction weight of the train phase.",
    "finetune_lambda_r": "Reconstruction weight of the finetune phase.",
    "finetune_lambda_p": "Latent prediction weight of the finetune phase.",
    "learning_rate": "Adam learning rate at the start of each phase.",
    "adam_epsilon": "Adam epsilon.",
    "lr_decay_epochs": "Multiply the learning rate by lr_decay_factor every N epochs (0: never).",
    "lr_decay_factor": "Step-decay factor of the learning rate.",
    "mixed_precision": "Keras dtype policy: float32, mixed_float16 or mixed_bfloat16.",
    "strategy": ("tf.distribute strategy: default (one device), mirrored (all local GPUs) or "
                 "multi_worker (MultiWorkerMirroredStrategy, machines from TF_CONFIG)."),
    "sync_batchnorm": "Synchronise BatchNorm batch statistics across replicas.",
    "checkpoint_every_steps": ("Also checkpoint every N steps within an epoch (0: at epoch "
                               "ends only)."),
    "checkpoints_to_keep": ("Newest checkpoints kept (0: all, e.g. every epoch's with "
                            "--checkpoint_every_steps=0)."),
    "calibration_holdout": ("Share of each training video's last frames held out of training "
                            "to calibrate the alarm threshold (0: none; calibrate on training "
                            "frames)."),
    "calibration_quantile": "Alarm threshold = this quantile of held-out normal scores.",
    "calibrate": "Write threshold.json at the end of training.",
    "image_summary_steps": "Write image summaries every N steps (0: never).",
    "log_every_steps": "Write scalar summaries every N steps.",
    "export": ("Write the serving SavedModel (<model_dir>/export/<version>/) at the end of "
               "training."),
    "output_dir": "Evaluation outputs (default: <model_dir>/eval).",
    "normalize": "per_video: min-max per test video (the paper); none: raw online scores.",
    "score": ("Frame score: latent_mean (the paper), latent_max, latent_top1/5/10 (mean of the "
              "worst 1/5/10% latent cells), cosine, frame_psnr or fusion (these two decode "
              "the predicted frame: Keras runtime only). See daml_tf/models/scores.py."),
    "smoothing": ("Temporal smoothing of scores: none, ma:N (causal mean of N), ema:A (causal "
                  "exponential) or gauss:S (centred, offline; not with --normalize=none)."),
    "finetune_trains": ("Finetune phase: all (every weight) or motion (the motion model only, "
                        "U-Net frozen; the reference code)."),
    "finetune_candidates": ("Run the finetune phase N times from the same start (each on "
                            "other batches) and keep the one whose speed-up check on the "
                            "training footage is highest; 1: once (the paper)."),
    "pseudo_anomaly_weight": ("Weight of the skip-frame pseudo-anomaly hinge (times "
                              "lambda_p; 0: off)."),
    "pseudo_anomaly_margin": ("Pseudo-anomalous clips' latent error is pushed above this "
                              "many times the batch's normal mean."),
    "pseudo_anomaly_speeds": "Comma-separated speed-ups (>= 2) of pseudo-anomalous clips.",
    "init_from": ("Start from the model weights of another run (its directory, checkpoints/ "
                  "folder or one checkpoint, e.g. pretrained/ped2_cpu) instead of random ones; "
                  "the architecture must match. Optimizer, schedule and background start "
                  "fresh. A serving export (export/<version>) holds no decoder: only with "
                  "--train_epochs=0 --finetune_trains=motion."),
    "eval_batch_size": "Frames encoded at once during evaluation.",
    "plots": "Write one score-curve PNG per test video.",
    "heatmaps": ("Write <output_dir>/heatmaps/<video>_<frame>.png for each test video's N "
                 "highest-scoring frames: the frame with its latent error heatmap, the anomaly "
                 "box and the score (0: none)."),
    "perturb": "Test-time perturbation: brightness:<factor> scales the HLS lightness of every "
               "test frame (0 < factor <= 1), as in the paper's robustness experiment.",
}

# Dataset-dependent fields: 0 means "take the registry's value".
_FROM_SPEC = {
    "image_height": lambda spec: spec.image_size[0],
    "image_width": lambda spec: spec.image_size[1],
    "channels": lambda spec: spec.channels,
    "time_steps": lambda spec: spec.time_steps,
    "interval": lambda spec: spec.interval,
    "delta": lambda spec: spec.delta,
}

_SECTIONS = {
    "data": config_lib.DataConfig,
    "model": config_lib.ModelConfig,
    "train": config_lib.TrainConfig,
    "eval": config_lib.EvalConfig,
}


def _flag_name(section: str, field: str) -> str:
  for flag_name, target in _RENAMED.items():
    if target == (section, field):
      return flag_name
  return field


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines one flag per config field (idempotent, so tests can call it again)."""
  for section, cls in _SECTIONS.items():
    for field in dataclasses.fields(cls):
      name = _flag_name(section, field.name)
      if name in flag_values:
        continue
      default = 0 if name in _FROM_SPEC else field.default
      help_text = _HELP.get(name, name)
      if field.type in (bool, "bool"):
        flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
      elif field.type in (int, "int"):
        flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
      elif field.type in (float, "float"):
        flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
      else:
        flags.DEFINE_string(name, default, help_text, flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> config_lib.Config:
  """Builds the frozen Config; raises ConfigError naming the flag on a bad value."""
  spec = registry.get_spec(flag_values["dataset"].value)
  sections = {}
  for section, cls in _SECTIONS.items():
    values = {}
    for field in dataclasses.fields(cls):
      name = _flag_name(section, field.name)
      value = flag_values[name].value
      if name in _FROM_SPEC and not value:
        value = _FROM_SPEC[name](spec)
      values[field.name] = value
    sections[section] = cls(**values)
  return config_lib.Config(**sections)
