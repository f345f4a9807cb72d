"""Typed, frozen configuration objects passed down from the entry points.

Flags are turned into these once (`daml_tf.cli_flags.config_from_flags`); library code never reads
FLAGS. Every config validates itself on construction so bad values stop the run before any data
is touched, with a message naming the flag.
"""

import dataclasses
import json
from typing import Any, Dict, Optional, Tuple

from daml_tf import fileio
from daml_tf import metrics
from daml_tf import smoothing as smoothing_lib
from daml_tf.data import perturb
from daml_tf.data import registry
from daml_tf.errors import ConfigError

MIXED_PRECISION_CHOICES = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGY_CHOICES = ("default", "mirrored", "multi_worker")
# What the finetune phase optimises: every weight, or the motion model alone on the codes of
# the frozen appearance U-Net (the reference code's second phase).
FINETUNE_TRAINS_CHOICES = ("all", "motion")
FRAME_CACHE_CHOICES = ("memory", "none")


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the frames are and how clips are cut from them.

  Attributes:
    dataset: registry name (see daml_tf.data.registry).
    data_dir: the dataset root (holding training/ and testing/), or a folder holding
      `<dataset>/`.
    image_height: model input height.
    image_width: model input width.
    channels: 1 (gray) or 3 (RGB).
    time_steps: k, input frames per clip.
    interval: frames between consecutive inputs.
    delta: frames between the last input and the target.
    batch_size: global training batch size, in clips.
    frame_cache: "memory" decodes every frame once and cuts clips from RAM; "none" decodes
      each clip's frames from disk (for datasets larger than memory).
    clips_per_epoch: 0 means every training clip once per epoch.
    label_file: frame-label file of the test split, overriding the dataset's when set.
    tfrecord_dir: when set, training clips come from the sharded TFRecords written there by
      `daml_tf.data.to_tfrecord` (any path daml_tf.fileio serves: local, gs://, s3://, ...)
      instead of the frames under data_dir (evaluation still reads the test frames from
      data_dir).
    seed: random seed for shuffling and initialisation.
  """

  dataset: str = "synthetic"
  data_dir: str = ""
  image_height: int = 64
  image_width: int = 96
  channels: int = 1
  time_steps: int = 4
  interval: int = 2
  delta: int = 2
  batch_size: int = 8
  frame_cache: str = "memory"
  clips_per_epoch: int = 0
  label_file: str = ""
  tfrecord_dir: str = ""
  seed: int = 0

  def __post_init__(self):
    registry.get_spec(self.dataset)  # Raises with the list of known names.
    _require(self.time_steps >= 2, f"--time_steps must be >= 2, got {self.time_steps}.")
    _require(self.interval >= 1, f"--interval must be >= 1, got {self.interval}.")
    _require(self.delta >= 1, f"--delta must be >= 1, got {self.delta}.")
    _require(self.batch_size >= 1, f"--batch_size must be >= 1, got {self.batch_size}.")
    _require(self.image_height >= 8 and self.image_width >= 8,
             f"--image_height/--image_width must be >= 8, got "
             f"{self.image_height}x{self.image_width}.")
    _require(self.channels in (1, 3), f"--channels must be 1 or 3, got {self.channels}.")
    _require(self.frame_cache in FRAME_CACHE_CHOICES,
             f"--frame_cache must be one of {FRAME_CACHE_CHOICES}, got {self.frame_cache!r}.")
    _require(self.clips_per_epoch >= 0,
             f"--clips_per_epoch must be >= 0, got {self.clips_per_epoch}.")

  @property
  def image_size(self):
    return (self.image_height, self.image_width)

  @property
  def clip_span(self) -> int:
    """Frames from the first input to the target: the target's index in a clip starting at 0."""
    return self.interval * (self.time_steps - 1) + self.delta


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of the appearance U-Net and the motion model.

  Attributes:
    levels: encoder blocks; the latent grid is the input size / 2^(levels-1).
    feature_root: channels of the first block, doubled per level.
    max_channels: cap on channels (the paper: 512).
    leaky_relu_slope: negative slope of every LeakyReLU.
    weight_decay: gamma of the L2 kernel regulariser (loss term gamma * sum ||W||^2).
    latent_loss_trains_encoder: let the latent prediction loss update the encoder too (the
      paper's joint training); False trains the encoder by reconstruction only.
    motion_bottleneck: width of the motion model's Conv3D blocks; 0 (the paper) keeps the
      latent code's channels, a smaller value adds a 1x1 reduction before and a 1x1 expansion
      after them (see MotionModel).
    motion: the motion model, a name registered in daml_tf.models.build.MOTION_MODELS
      ("conv3d": the paper's Conv3D blocks; "two_horizon": two of them, on the newest and on
      the oldest codes, see TwoHorizonMotion; "two_level": one on the finest encoder level's
      features of the newest codes and one on the latent codes of the oldest, see
      TwoLevelMotion).
    motion_head_steps: codes per head of a two_horizon or two_level motion model; 0 means
      time_steps - 2.
  """

  levels: int = 3
  feature_root: int = 16
  max_channels: int = 512
  leaky_relu_slope: float = 0.2
  weight_decay: float = 0.001
  latent_loss_trains_encoder: bool = True
  motion_bottleneck: int = 0
  motion: str = "conv3d"
  motion_head_steps: int = 0

  def __post_init__(self):
    _require(2 <= self.levels <= 6, f"--levels must be in [2, 6], got {self.levels}.")
    _require(self.feature_root >= 1, f"--feature_root must be >= 1, got {self.feature_root}.")
    _require(self.max_channels >= self.feature_root,
             f"--max_channels ({self.max_channels}) must be >= --feature_root "
             f"({self.feature_root}).")
    _require(self.weight_decay >= 0, f"--weight_decay must be >= 0, got {self.weight_decay}.")
    _require(self.motion_bottleneck >= 0,
             f"--motion_bottleneck must be >= 0, got {self.motion_bottleneck}.")
    # The name is checked against the registry when the model is built (daml_tf.models.build):
    # the registry holds Keras classes, which configs do not import.
    _require(bool(self.motion), "--motion must name a motion model.")
    _require(self.motion_head_steps >= 0,
             f"--motion_head_steps must be >= 0, got {self.motion_head_steps}.")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation schedule of the two phases.

  Attributes:
    model_dir: checkpoints, TensorBoard logs, background, resolved config, export.
    train_epochs: epochs of the train phase.
    finetune_epochs: epochs of the finetune phase.
    train_lambda_r: reconstruction weight of the train phase.
    train_lambda_p: latent prediction weight of the train phase.
    finetune_lambda_r: reconstruction weight of the finetune phase.
    finetune_lambda_p: latent prediction weight of the finetune phase.
    learning_rate: Adam's initial rate, restarted at each phase.
    adam_epsilon: Adam's epsilon.
    lr_decay_epochs: multiply the rate by lr_decay_factor every this many epochs of a phase
      (0: never).
    lr_decay_factor: the step factor.
    mixed_precision: Keras dtype policy: float32, mixed_float16 or mixed_bfloat16.
    strategy: tf.distribute strategy: "default" (one device), "mirrored" (all local GPUs),
      "multi_worker" (MultiWorkerMirroredStrategy over the machines named by TF_CONFIG).
    sync_batchnorm: synchronise BatchNorm statistics across replicas (the global batch's
      statistics instead of each replica's).
    checkpoint_every_steps: also checkpoint every N steps inside an epoch (0: at epoch ends
      only), so a killed run loses at most N steps.
    checkpoints_to_keep: how many of the newest checkpoints to keep (0: every one, e.g. each
      epoch's, to score the learning curve with experiments/ped2_accuracy/checkpoint_ablation.py).
    image_summary_steps: write input/reconstruction/prediction images every N steps (0: never).
    log_every_steps: scalar summaries every N steps.
    export: write the serving SavedModel (<model_dir>/export/<version>/) at the end of
      training.
    calibration_holdout: share of each training video's frames (its last ones) held out of
      training to calibrate the alarm threshold; 0 trains on every frame and calibrates on
      the training frames.
    calibration_quantile: the threshold is this quantile of the held-out normal scores.
    calibrate: compute and save threshold.json at the end of training.
    finetune_trains: "all" updates every weight in the finetune phase; "motion" updates only
      the motion model, on the codes of the frozen U-Net run in inference mode (the reference
      code's train_op_z), so encoder and decoder weights stay bit-identical.
    finetune_candidates: run the finetune phase this many times from the same start, each
      on the next batches of the data stream (another batch order), and keep the candidate
      whose speed-up check on the training footage is highest (daml_tf.evaluation.speedup_check); 1:
      once, as the paper. The batch order alone moved a Ped2 run's AUC by up to 0.075.
    pseudo_anomaly_weight: weight (times the phase's lambda_p) of the pseudo-anomaly hinge;
      0 turns pseudo-anomalies off.
    pseudo_anomaly_margin: the hinge pushes each pseudo-anomalous clip's latent error above
      this many times the mean error of the batch's normal clips.
    pseudo_anomaly_speeds: comma-separated speed-ups s (>= 2): a pseudo-anomalous clip takes its
      inputs s * interval frames apart and its target s * delta frames after the last, as if
      the video played s times faster.
    init_from: a run directory, its checkpoints/ folder or one checkpoint whose model weights
      a new run starts from instead of random ones (the optimizer, the schedule position and
      the background start fresh); or a serving export, whose encoder and motion model start
      a run that does not train the decoder (the export has none: only with
      --train_epochs=0 --finetune_trains=motion); ignored once the run has checkpoints of its
      own. The architecture must match.
  """

  model_dir: str = "runs/demo"
  train_epochs: int = 1
  finetune_epochs: int = 1
  train_lambda_r: float = 1.0
  train_lambda_p: float = 0.001
  finetune_lambda_r: float = 0.001
  finetune_lambda_p: float = 1.0
  learning_rate: float = 1e-4
  adam_epsilon: float = 1e-4
  lr_decay_epochs: int = 0
  lr_decay_factor: float = 0.1
  mixed_precision: str = "float32"
  strategy: str = "default"
  sync_batchnorm: bool = False
  checkpoint_every_steps: int = 200
  checkpoints_to_keep: int = 3
  image_summary_steps: int = 200
  log_every_steps: int = 10
  export: bool = True
  calibration_holdout: float = 0.1
  calibration_quantile: float = 0.995
  calibrate: bool = True
  finetune_trains: str = "all"
  finetune_candidates: int = 1
  pseudo_anomaly_weight: float = 0.0
  pseudo_anomaly_margin: float = 2.0
  pseudo_anomaly_speeds: str = "2,3,4"
  init_from: str = ""

  @property
  def pseudo_speeds(self) -> Tuple[int, ...]:
    """The speed-ups of pseudo-anomalous clips; empty when they are off."""
    if not self.pseudo_anomaly_weight:
      return ()
    return tuple(int(s) for s in self.pseudo_anomaly_speeds.split(",") if s.strip())

  def __post_init__(self):
    _require(bool(self.model_dir), "--model_dir must be set.")
    _require(self.finetune_trains in FINETUNE_TRAINS_CHOICES,
             f"--finetune_trains must be one of {FINETUNE_TRAINS_CHOICES}, "
             f"got {self.finetune_trains!r}.")
    _require(self.finetune_candidates >= 1,
             f"--finetune_candidates must be >= 1, got {self.finetune_candidates}.")
    _require(self.finetune_candidates == 1 or self.finetune_epochs >= 1,
             "--finetune_candidates > 1 needs a finetune phase (--finetune_epochs >= 1).")
    _require(self.finetune_candidates == 1 or self.strategy != "multi_worker",
             "--finetune_candidates > 1 is not supported with --strategy=multi_worker.")
    _require(self.pseudo_anomaly_weight >= 0,
             f"--pseudo_anomaly_weight must be >= 0, got {self.pseudo_anomaly_weight}.")
    _require(self.pseudo_anomaly_margin > 0,
             f"--pseudo_anomaly_margin must be > 0, got {self.pseudo_anomaly_margin}.")
    speeds = [s.strip() for s in self.pseudo_anomaly_speeds.split(",") if s.strip()]
    _require(bool(speeds) and all(s.isdigit() and int(s) >= 2 for s in speeds),
             f"--pseudo_anomaly_speeds must be whole numbers >= 2 separated by commas, got "
             f"{self.pseudo_anomaly_speeds!r}.")
    _require(self.train_epochs >= 0, f"--train_epochs must be >= 0, got {self.train_epochs}.")
    _require(self.finetune_epochs >= 0,
             f"--finetune_epochs must be >= 0, got {self.finetune_epochs}.")
    _require(self.learning_rate > 0, f"--learning_rate must be > 0, got {self.learning_rate}.")
    _require(self.adam_epsilon > 0, f"--adam_epsilon must be > 0, got {self.adam_epsilon}.")
    _require(self.lr_decay_epochs >= 0,
             f"--lr_decay_epochs must be >= 0, got {self.lr_decay_epochs}.")
    _require(0 < self.lr_decay_factor <= 1,
             f"--lr_decay_factor must be in (0, 1], got {self.lr_decay_factor}.")
    for name in ("train_lambda_r", "train_lambda_p", "finetune_lambda_r", "finetune_lambda_p"):
      _require(getattr(self, name) >= 0, f"--{name} must be >= 0, got {getattr(self, name)}.")
    _require(self.mixed_precision in MIXED_PRECISION_CHOICES,
             f"--mixed_precision must be one of {MIXED_PRECISION_CHOICES}, "
             f"got {self.mixed_precision!r}.")
    _require(self.strategy in STRATEGY_CHOICES,
             f"--strategy must be one of {STRATEGY_CHOICES}, got {self.strategy!r}.")
    _require(self.image_summary_steps >= 0,
             f"--image_summary_steps must be >= 0, got {self.image_summary_steps}.")
    _require(self.log_every_steps >= 1,
             f"--log_every_steps must be >= 1, got {self.log_every_steps}.")
    _require(self.checkpoint_every_steps >= 0,
             f"--checkpoint_every_steps must be >= 0, got {self.checkpoint_every_steps}.")
    _require(self.checkpoints_to_keep >= 0,
             f"--checkpoints_to_keep must be >= 0, got {self.checkpoints_to_keep}.")
    _require(0 <= self.calibration_holdout < 1,
             f"--calibration_holdout must be in [0, 1), got {self.calibration_holdout}.")
    _require(0 < self.calibration_quantile <= 1,
             f"--calibration_quantile must be in (0, 1], got {self.calibration_quantile}.")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Frame-level evaluation.

  Attributes:
    output_dir: metrics.json, scores.csv and plots; defaults to <model_dir>/eval.
    normalize: "per_video" min-max (the paper's protocol) or "none" (online scores).
    batch_size: frames encoded at once during evaluation.
    plots: write one score-curve PNG per test video.
    perturb: test-time perturbation, "" or "brightness:<factor>": the HLS lightness of every
      test frame scaled (0 < factor <= 1), as in the paper's robustness experiment.
    score: the frame score of evaluation, calibration, detection and exports, a
      daml_tf.models.scores.SCORES name: latent_mean (the paper), latent_max,
      latent_top1/5/10 (mean of the worst 1/5/10% latent cells), cosine, frame_psnr or fusion
      (these two decode the predicted frame: Keras runtime only), motion_weighted or
      motion_product (the latent error weighted by the optical flow at the input's resolution:
      calibrate fits the flow's normalisation, motion_norm.json).
    smoothing: temporal smoothing of the scores (daml_tf.smoothing spec): causal "ma:N" or
      "ema:A", or the centred "gauss:S" for recorded video with --normalize=per_video only.
    heatmaps: write, for each test video, a PNG of each of its this many highest-scoring frames
      with the latent error heatmap and the anomaly box (0: none).
    flow_scale: for a score of motion evidence (motion_weighted, motion_product), the fraction
      of the input's resolution the optical flow is computed at (0 < s <= 1); calibration fits
      the flow's normalisation at it and stores both in motion_norm.json, which evaluation and
      detection then follow.
  """

  output_dir: str = ""
  normalize: str = "per_video"
  batch_size: int = 32
  plots: bool = True
  perturb: str = ""
  score: str = "latent_mean"
  smoothing: str = "none"
  heatmaps: int = 0
  flow_scale: float = 1.0

  def __post_init__(self):
    _require(self.heatmaps >= 0, f"--heatmaps must be >= 0, got {self.heatmaps}.")
    _require(0 < self.flow_scale <= 1, f"--flow_scale must be in (0, 1], got {self.flow_scale}.")
    _require(self.normalize in metrics.NORMALIZE_MODES,
             f"--normalize must be one of {metrics.NORMALIZE_MODES}, got {self.normalize!r}.")
    _require(self.batch_size >= 1, f"--eval_batch_size must be >= 1, got {self.batch_size}.")
    try:
      perturb.parse_perturbation(self.perturb)
    except perturb.PerturbationError as error:
      raise ConfigError(str(error)) from None
    try:
      smoothing = smoothing_lib.parse(self.smoothing)
    except ValueError as error:
      raise ConfigError(f"--smoothing: {error}") from None
    # Online scores are the live camera's: nothing may look at later frames.
    _require(smoothing.causal or self.normalize != "none",
             f"--smoothing={self.smoothing} looks at later frames; with --normalize=none "
             "(online scores) use none, ma:N or ema:A.")


@dataclasses.dataclass(frozen=True)
class Config:
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

  def __post_init__(self):
    factor = 2**(self.model.levels - 1)
    _require(self.data.image_height % factor == 0 and self.data.image_width % factor == 0,
             f"--image_height/--image_width ({self.data.image_height}x{self.data.image_width}) "
             f"must be divisible by 2^(levels-1) = {factor} for --levels={self.model.levels}.")

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values: Dict[str, Any]) -> "Config":
    return cls(
        data=DataConfig(**values.get("data", {})),
        model=ModelConfig(**values.get("model", {})),
        train=TrainConfig(**values.get("train", {})),
        eval=EvalConfig(**values.get("eval", {})),
    )

  def replace(self, **sections) -> "Config":
    return dataclasses.replace(self, **sections)


def load_config(path: str) -> Optional[Config]:
  """Reads a resolved config written by `save_config`."""
  fileio.ensure_filesystem(path)
  with fileio.GFile(path) as f:
    return Config.from_dict(json.load(f))


def save_config(config: Config, path: str) -> None:
  fileio.ensure_filesystem(path)
  with fileio.GFile(path, "w") as f:
    f.write(config.to_json())
