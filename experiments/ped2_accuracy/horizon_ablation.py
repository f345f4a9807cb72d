"""How far ahead should the motion model predict? Measured on trained runs' frozen codes.

    .venv/bin/python -m experiments.ped2_accuracy.horizon_ablation --data_dir=~/datasets \
        --model_dirs=pretrained/ped2_cpu,<runs> --output=experiments/ped2_accuracy/results/horizons.json

With the latent loss kept out of the encoder (`--nolatent_loss_trains_encoder`, every shipped
config), the appearance model never sees the motion model's horizon, so the horizon can be
compared on one run's encoder: for each run, fresh motion models (the package's `MotionModel`,
the run's interval) are trained on its frozen training codes, one per `--variants` entry
(`d8`: target 8 frames after the last input, the `--delta` flag; `k6d4`: 6 inputs; `d4s1`: a
second seed), and every variant scores the same test frames (those every variant can predict).
This pairs the comparison on the encoder, whose seed moves the AUC by as much as 0.05 (README,
"Accuracy levers"), and costs about 30 s per motion model instead of a training run per row. The
run's own motion model (`own`) is scored on the same frames; a sum like `d4+d8` adds the latent
errors of two variants' models: an ensemble of motion models on shared codes, which would cost a
second motion model per frame and no second encoder (`d4+d4s1`, two seeds at one horizon, tells
the ensemble's effect from the horizons'). A variant may also predict another encoder level's
features of the target frame (`l0d4`: the finest level, the first skip), the motion error on a
finer grid; sums across levels need `--sum_scale=train_mean`, which divides each part by its
mean over the training clips.

Reported per variant, with `latent_mean` and `latent_top5`: the paper's per-video min-max
(micro, macro, EER; micro under `ema:0.3` and `gauss:3`) and raw pooled (online, also under
`ema:0.3`); `summary` gives the mean over runs and in how many runs each variant beat the fresh
model at the runs' own horizon. Host-side NumPy after collecting codes, like
`experiments/ped2_accuracy/spatial_score_ablation.py`.
"""

import json
import re
from typing import Callable, Dict, List, Sequence, Tuple, Union

from absl import app
from absl import flags
from absl import logging
import keras
import numpy as np
import tensorflow as tf

from daml_tf.evaluation import scoring as evaluation
from daml_tf import run_dir
from experiments.ped2_accuracy import score_ablation
from daml_tf import smoothing as smoothing_lib
from daml_tf.evaluation import speedup_check
from daml_tf.data import layout
from daml_tf.data import pipeline
from daml_tf.models import motion as motion_lib
from daml_tf.models import scores as scores_lib

FLAGS = flags.FLAGS
SCORES = ("latent_mean", "latent_top5")
SMOOTHINGS = ("none", "ema:0.3", "gauss:3")
# The encoder level of the latent code in the list of an encoder's features.
LATENT = -1
# encode_levels' key of the codes the run's own motion model reads.
OWN_CODE = "own_code"


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  flags.DEFINE_list("model_dirs", None, "Training run directories (or pretrained/ped2_cpu).",
                    flag_values=flag_values)
  flags.DEFINE_string("data_dir", "", "Where the runs' dataset is (default: as trained).",
                      flag_values=flag_values)
  flags.DEFINE_list(
      "variants", ["d4", "d8", "d12", "d16", "d4s1", "k6d4"],
      "Motion models to train, `[l<level>][k<inputs>]d<horizon>[s<seed offset>]`: the horizon "
      "is the target's distance in frames after the last input (--delta), the inputs default to "
      "the run's k, the seed offset to 0; the level, the encoder level whose features the model "
      "predicts (0: the finest, the first skip; default: the latent code).",
      flag_values=flag_values)
  flags.DEFINE_list("sums", ["d4+d8", "d4+d4s1"],
                    "Sums of variants' latent errors to score as well.", flag_values=flag_values)
  flags.DEFINE_bool("speedup_check", False,
                    "Also compute each variant's speed-up check (daml_tf.evaluation.speedup_check: its "
                    "latent_mean on the training clips played twice as fast against the clips "
                    "themselves), to see whether the check, which needs no labels, ranks the "
                    "variants as the test AUCs do.", flag_values=flag_values)
  flags.DEFINE_enum("sum_scale", "raw", ["raw", "train_mean"],
                    "How a sum weighs its parts: raw errors (parts on one code), or each part "
                    "divided by its mean over the training clips (parts on different encoder "
                    "levels, whose errors have different scales).", flag_values=flag_values)
  flags.DEFINE_integer("epochs", 5, "Epochs per motion model; the last at a tenth of the rate.",
                       flag_values=flag_values)
  flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (the CPU configs' rate).",
                     flag_values=flag_values)
  flags.DEFINE_integer("seed", 0, "Seed of the motion models' initialisation and batches.",
                       flag_values=flag_values)
  flags.DEFINE_string("output", None, "The JSON file of results.", flag_values=flag_values)
  flags.mark_flags_as_required(["model_dirs", "output"], flag_values=flag_values)


def clips_from(num_frames: int, time_steps: int, interval: int, delta: int,
               first_target: int) -> np.ndarray:
  """`pipeline.clip_indices` restricted to the clips whose target is >= first_target, so that
  every horizon scores the same frames."""
  clips = pipeline.clip_indices(num_frames, time_steps, interval, delta)
  return clips[clips[:, -1] >= first_target]


def stacked_clips(lengths: Sequence[int], time_steps: int, interval: int,
                  delta: int) -> np.ndarray:
  """The clips of several videos as rows into their codes concatenated in order."""
  offsets = np.cumsum([0] + list(lengths[:-1]))
  return np.concatenate([pipeline.clip_indices(n, time_steps, interval, delta) + offset
                         for n, offset in zip(lengths, offsets)])


def fit_motion(codes: Sequence[np.ndarray], time_steps: int, interval: int, delta: int,
               weight_decay: float, epochs: int, learning_rate: float, seed: int,
               batch_size: int = 8) -> keras.Model:
  """A fresh MotionModel trained on frozen codes (one array [n, h, w, c] per video) with the
  finetune phase's loss: the latent SSE plus the L2 weight penalty."""
  keras.utils.set_random_seed(seed)
  # Gathered on the host and passed in: codes captured by the step function as a constant
  # (hundreds of MB at the first level) stayed alive after the fit, and 11 runs of 5 models
  # filled the VM's 24 GB.
  all_codes = np.concatenate(codes)
  clips = stacked_clips([len(c) for c in codes], time_steps, interval, delta)
  model = motion_lib.MotionModel(time_steps=time_steps, latent_shape=codes[0].shape[1:],
                                 weight_decay=weight_decay)
  optimizer = keras.optimizers.Adam(learning_rate, epsilon=1e-4)

  @tf.function
  def step(past, target):
    with tf.GradientTape() as tape:
      sse = scores_lib.latent_sse(model(past, training=True), target)
      penalty = tf.add_n(model.losses) if model.losses else 0.0
      loss = tf.reduce_mean(sse) + penalty
    optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

  rng = np.random.default_rng(seed)
  num_clips = len(clips)
  for epoch in range(epochs):
    optimizer.learning_rate.assign(learning_rate * (0.1 if epoch == epochs - 1 else 1.0))
    order = rng.permutation(num_clips)
    for start in range(0, num_clips - batch_size + 1, batch_size):
      batch = clips[order[start:start + batch_size]]
      step(tf.constant(all_codes[batch[:, :-1]]), tf.constant(all_codes[batch[:, -1]]))
  return model


def clip_scorer(motion: keras.Model, batch_size: int = 64
                ) -> Callable[[np.ndarray, np.ndarray], Dict[str, np.ndarray]]:
  """(codes, clips) -> {score name: [n]} of the clips' targets, by the package's host scorers.

  The graphs are built once per motion model and reused for every video.
  """
  predict = tf.function(lambda past: motion(past, training=False), reduce_retracing=True)
  scorers = {name: scores_lib.host_scorer(name) for name in SCORES}

  def score(codes: np.ndarray, clips: np.ndarray) -> Dict[str, np.ndarray]:
    out = {name: [] for name in SCORES}
    for start in range(0, len(clips), batch_size):
      rows = clips[start:start + batch_size]
      predicted = predict(tf.constant(codes[rows[:, :-1]])).numpy()
      for name, scorer in scorers.items():
        out[name].append(scorer(predicted, codes[rows[:, -1]])[0])
    return {name: np.concatenate(values).astype(np.float64) for name, values in out.items()}

  return score


def variant_check(motion: keras.Model, codes: Sequence[np.ndarray], steps: int,
                  interval: int, horizon: int) -> float:
  """The speed-up check of one fresh motion model on frozen training codes: ROC AUC of its
  `latent_mean` on clips with every gap doubled against the normal clips."""
  score = clip_scorer(motion)
  speedup = speedup_check.DEFAULT_SPEEDUP

  def scores_at(factor):
    per_video = []
    for video in codes:
      clips = pipeline.clip_indices(len(video), steps, interval * factor, horizon * factor)
      if len(clips):  # Videos too short for one clip at this speed have none.
        per_video.append(score(video, clips)["latent_mean"])
    return np.concatenate(per_video)

  return speedup_check.separation_auc(scores_at(1), scores_at(speedup))


def sum_of_parts(parts: Sequence[List[np.ndarray]], scales: Sequence[float]
                 ) -> List[np.ndarray]:
  """Per video, the sum over parts (each a list of per-video scores) of part / its scale."""
  return [sum(video / scale for video, scale in zip(videos, scales))
          for videos in zip(*parts)]


def metrics(per_video: List[np.ndarray], labels: List[np.ndarray]) -> Dict[str, float]:
  row = score_ablation.metrics_row(per_video, labels, smoothing_lib.parse("none"))
  for spec in SMOOTHINGS[1:]:
    smoothed = score_ablation.metrics_row(per_video, labels, smoothing_lib.parse(spec))
    row[f"micro_auc|{spec}"] = smoothed["micro_auc"]
    if "online_auc" in smoothed:
      row[f"online_auc|{spec}"] = smoothed["online_auc"]
  return row


def encode(model, cfg, videos) -> List[np.ndarray]:
  """The latent codes of the videos: one [n, h, w, c] array per video."""
  return encode_levels(model, cfg, videos)[LATENT]


def encode_levels(model, cfg, videos, levels: Sequence[Union[int, str]] = (LATENT,)
                  ) -> Dict[Union[int, str], List[np.ndarray]]:
  """{level: one [n, h, w, c] array per video} of the encoder's features at those levels (indices
  from the first level; LATENT = -1, the last); the level OWN_CODE gives the codes the run's own
  motion model reads (`DAML.code_of`: the latent code, unless that model reads other levels
  too). Only what is asked for leaves the graph: a first level's features of every training
  frame are hundreds of MB."""

  @tf.function
  def wanted(frames):
    features = model.encode(frames, training=False)
    return [model.code_of(features) if level == OWN_CODE else features[level]
            for level in levels]

  background = model.background.numpy()
  batch = cfg.eval.batch_size
  outputs = {level: [] for level in levels}
  for video in videos:
    frames = pipeline.load_video(video, cfg.data.image_size, cfg.data.channels, background)
    batches = [[output.numpy() for output in wanted(frames[start:start + batch])]
               for start in range(0, len(frames), batch)]
    for level, per_batch in zip(levels, zip(*batches)):
      outputs[level].append(np.concatenate(per_batch))
  return outputs


def parse_variant(key: str, time_steps: int) -> Tuple[int, int, int, int]:
  """`[l<L>][k<K>]d<H>[s<S>]` -> (inputs K (default: the run's), horizon H, seed offset S
  (default 0), encoder level L (default: the latent code))."""
  match = re.fullmatch(r"(?:l(\d+))?(?:k(\d+))?d(\d+)(?:s(\d+))?", key)
  if not match:
    raise app.UsageError(f"Not a motion model variant: {key!r} (e.g. d8, d4s1, k6d4, l0d4).")
  level, steps, horizon, seed_offset = match.groups()
  return (int(steps or time_steps), int(horizon), int(seed_offset or 0),
          LATENT if level is None else int(level))


def ablate_run(model_dir: str, variants: Sequence[str], sums: Sequence[Sequence[str]]):
  cfg, model = run_dir.restore_run(model_dir, FLAGS.data_dir)
  data = cfg.data
  _, train_videos = layout.find_videos(data.dataset, data.data_dir, "training")
  train_videos, _ = layout.split_holdout(train_videos, cfg.train.calibration_holdout,
                                         data.clip_span)
  test_videos, labels = evaluation.test_split(cfg)
  geometries = {key: parse_variant(key, data.time_steps) for key in variants}
  levels = tuple(sorted({LATENT} | {level for *_, level in geometries.values()}))
  train_codes = encode_levels(model, cfg, train_videos, levels)
  test_codes = encode_levels(model, cfg, test_videos, levels + (OWN_CODE,))
  first_target = max(data.interval * (steps - 1) + horizon
                     for steps, horizon, *_ in list(geometries.values()) +
                     [(data.time_steps, data.delta)])
  test_labels = [video_labels[first_target:] for video_labels in labels]

  def scored(motion, steps, delta, codes_of_videos):
    score = clip_scorer(motion)
    per_video = [score(codes, clips_from(len(codes), steps, data.interval, delta, first_target))
                 for codes in codes_of_videos]
    return {name: [video[name] for video in per_video] for name in SCORES}

  raw = {"own": scored(model.motion, data.time_steps, data.delta, test_codes[OWN_CODE])}
  # Each variant's mean score over the training clips, the scale of --sum_scale=train_mean.
  train_mean = {}
  checks = {}
  for key, (steps, horizon, seed_offset, level) in geometries.items():
    motion = fit_motion(train_codes[level], steps, data.interval, horizon,
                        cfg.model.weight_decay, FLAGS.epochs, FLAGS.learning_rate,
                        FLAGS.seed + seed_offset)
    raw[key] = scored(motion, steps, horizon, test_codes[level])
    if FLAGS.speedup_check:
      checks[key] = variant_check(motion, train_codes[level], steps, data.interval, horizon)
    if FLAGS.sum_scale == "train_mean":
      score = clip_scorer(motion)
      on_training = [score(codes, pipeline.clip_indices(len(codes), steps, data.interval,
                                                        horizon))
                     for codes in train_codes[level]]
      train_mean[key] = {name: float(np.concatenate([video[name] for video in on_training]
                                                    ).mean()) for name in SCORES}
    logging.info("%s: motion model %s trained and scored", model_dir, key)
  for parts in sums:
    raw["+".join(parts)] = {
        name: sum_of_parts([raw[key][name] for key in parts],
                           [train_mean[key][name] if train_mean else 1.0 for key in parts])
        for name in SCORES}
  results = {}
  for variant, by_score in raw.items():
    for name, per_video in by_score.items():
      results[f"{variant}|{name}"] = metrics(per_video, test_labels)
      logging.info("%s %s|%s %s", model_dir, variant, name, results[f"{variant}|{name}"])
  return results, f"d{data.delta}", checks


def summarize(results: Dict[str, Dict[str, Dict[str, float]]], reference: str):
  """{variant: {metric: [mean over runs, runs where it beat `reference`]}}."""
  runs = list(results)
  summary = {}
  for variant in results[runs[0]]:
    summary[variant] = {}
    for metric in results[runs[0]][variant]:
      values = np.array([results[run][variant][metric] for run in runs])
      base = np.array([results[run][reference][metric] for run in runs])
      # EER: lower is better.
      wins = (values < base) if metric == "eer" else (values > base)
      summary[variant][metric] = [round(float(values.mean()), 4), int(wins.sum())]
  return summary


def main(argv):
  del argv
  sums = [spec.split("+") for spec in FLAGS.sums]
  missing = sorted({key for parts in sums for key in parts} - set(FLAGS.variants))
  if missing:
    raise app.UsageError(f"--sums uses variants not in --variants: {missing}")
  results, checks = {}, {}
  for model_dir in FLAGS.model_dirs:
    results[model_dir], own_horizon, checks[model_dir] = ablate_run(model_dir, FLAGS.variants,
                                                                    sums)
    # The reference: the paper's score from a fresh model at the horizon the run was trained
    # with (trained like the other variants, unlike `own`).
    reference = (f"{own_horizon}|latent_mean" if own_horizon in FLAGS.variants else
                 "own|latent_mean")
    # Written after every run: a long list of runs can be stopped and still leave its results.
    with open(FLAGS.output, "w") as f:
      json.dump({"runs": results, "reference": reference,
                 "summary": summarize(results, reference),
                 **({"speedup_checks": checks} if FLAGS.speedup_check else {})}, f, indent=1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
