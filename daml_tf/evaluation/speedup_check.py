"""A label-free check of a trained run: does it tell its normal footage played faster from the
footage itself?

Normal footage has no labels, but one kind of anomaly can be made from it for free: the same
clips with every gap between inputs, and between the last input and the target, doubled (the
footage played twice as fast; LNTRA's skip-frame pseudo-anomalies). A model of normal motion
should score those clips higher. The check is the ROC AUC of the run's configured score on the
sped-up clips against the normal clips of its training videos (without the tails held out for
the threshold; the tails when no training video is long enough): 1.0 when every sped-up clip
scores above every normal one, 0.5 when the score cannot tell them apart. The training videos
rather than the held-out tails because that is where it was measured to work, and because the
short tails saturate it (0.9987 to 0.9999 for four finetunes of one run, README "Watching a live
camera"), leaving nothing to choose by.

What it is good for (measured on UCSD Ped2, README "Choosing a run without test labels"): over
17 runs of one recipe that differ only in their seed it tracked the test AUC (Spearman 0.53 with
the per-video micro AUC, 0.91 with the pooled raw one), so keeping the best of several seeds by
it is a way to choose a run without labelled footage; and a run that collapsed stood out (0.81,
where the others scored 0.92 to 0.99). Compare runs of one recipe on one camera's footage: the
value depends on how fast things move in the scene, so it has no universal pass mark.

Computed at the end of training (after the threshold) and by `python -m daml_tf.rank_runs`;
written to <model_dir>/speedup_check.json.
"""

import dataclasses
from typing import List, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np
from sklearn import metrics as sk_metrics

from daml_tf.evaluation import calibration
from daml_tf import config as config_lib
from daml_tf import errors
from daml_tf import run_dir
from daml_tf.data import layout
from daml_tf.models import DAML
from daml_tf.models import scores as scores_lib

# Twice the trained speed: the pre-registered choice. Three times separated almost every Ped2
# run perfectly (AUC 0.995 to 1.0), which leaves nothing to rank by.
DEFAULT_SPEEDUP = 2


@dataclasses.dataclass(frozen=True)
class SpeedupCheck:
  """The check's result.

  Attributes:
    auc: ROC AUC of sped-up clips (positives) against normal clips (negatives).
    speedup: how many times faster the sped-up clips play.
    score: the score compared.
    normal_clips, sped_up_clips: how many clips of each kind were scored.
    normal_mean, sped_up_mean: their mean raw scores.
    held_out: whether the footage was held out of training.
  """

  auc: float
  speedup: int
  score: str
  normal_clips: int
  sped_up_clips: int
  normal_mean: float
  sped_up_mean: float
  held_out: bool


def sped_up(data_cfg: config_lib.DataConfig, speedup: int) -> config_lib.DataConfig:
  """The clip geometry of the footage played `speedup` times faster: the same number of inputs,
  every gap multiplied (as `pipeline.pseudo_anomaly_clip_indices` cuts them)."""
  if speedup < 2:
    raise ValueError(f"speedup must be >= 2, got {speedup}.")
  return dataclasses.replace(data_cfg, interval=data_cfg.interval * speedup,
                             delta=data_cfg.delta * speedup)


def long_enough(videos: Sequence[layout.Video], data_cfg: config_lib.DataConfig,
                speedup: int) -> List[layout.Video]:
  """The videos long enough for at least one clip at `speedup` times the speed."""
  span = sped_up(data_cfg, speedup).clip_span
  return [v for v in videos if v.num_frames > span]


def separation_auc(normal: np.ndarray, sped_up_scores: np.ndarray) -> float:
  """ROC AUC of `sped_up_scores` (positives) against `normal` (negatives); ties count half."""
  normal = np.asarray(normal, np.float64).ravel()
  sped_up_scores = np.asarray(sped_up_scores, np.float64).ravel()
  if not normal.size or not sped_up_scores.size:
    raise ValueError("Both normal and sped-up scores are needed.")
  labels = np.concatenate([np.zeros(normal.size), np.ones(sped_up_scores.size)])
  return float(sk_metrics.roc_auc_score(labels, np.concatenate([normal, sped_up_scores])))


def speedup_check(model: DAML, cfg: config_lib.Config, videos: Sequence[layout.Video],
                  held_out: bool, speedup: int = DEFAULT_SPEEDUP,
                  score_stats: Optional[Mapping[str, Tuple[float, float]]] = None
                  ) -> SpeedupCheck:
  """Scores the normal and the sped-up clips of `videos` with cfg.eval.score.

  Raises:
    DataError: no video is long enough for one sped-up clip.
  """
  score = cfg.eval.score
  if scores_lib.get_score(score).needs_motion:
    # The check compares models (seeds, finetunes) on the same footage, and the motion
    # evidence is the footage's, the same for every model; its flow would also be taken
    # between frames the sped-up clips skip. The model's own part decides.
    score = scores_lib.DEFAULT_SCORE
  batch_size = cfg.eval.batch_size
  normal = calibration.normal_scores(model, cfg.data, videos, batch_size, score, score_stats)
  fast_cfg = sped_up(cfg.data, speedup)
  fast_videos = long_enough(videos, cfg.data, speedup)
  if not fast_videos:
    raise errors.DataError(
        f"No video is long enough for a clip at {speedup}x speed (each needs more than "
        f"{fast_cfg.clip_span} frames).")
  fast = calibration.normal_scores(model, fast_cfg, fast_videos, batch_size, score, score_stats)
  return SpeedupCheck(auc=separation_auc(normal, fast), speedup=speedup, score=score,
                      normal_clips=int(normal.size), sped_up_clips=int(fast.size),
                      normal_mean=float(normal.mean()), sped_up_mean=float(fast.mean()),
                      held_out=held_out)


def check_and_save(model: DAML, cfg: config_lib.Config, videos: Sequence[layout.Video],
                   held_out: bool, output_dir: str = "",
                   speedup: int = DEFAULT_SPEEDUP) -> SpeedupCheck:
  """`speedup_check`, logged and, with an output_dir, written to its speedup_check.json.

  A fusion score's part statistics are read from output_dir, else from cfg.train.model_dir.
  """
  stats = (run_dir.load_score_stats(output_dir or cfg.train.model_dir)
           if scores_lib.get_score(cfg.eval.score).parts else None)
  result = speedup_check(model, cfg, videos, held_out, speedup, stats)
  written = ("written to " + run_dir.save_speedup_check(output_dir, dataclasses.asdict(result))
             if output_dir else "not written")
  logging.info("Speed-up check: %s tells %dx sped-up clips from normal ones with AUC %.4f "
               "(%d and %d clips of %s footage); %s. Compare it across seeds of one recipe: "
               "higher tends to detect better.", result.score, speedup, result.auc,
               result.sped_up_clips, result.normal_clips,
               "held-out" if held_out else "training", written)
  return result


def check_footage(model: DAML, cfg: config_lib.Config, training_videos: Sequence[layout.Video],
                  holdout_videos: Sequence[layout.Video], output_dir: str = "",
                  speedup: int = DEFAULT_SPEEDUP) -> Optional[SpeedupCheck]:
  """`check_and_save` on the training videos (the held-out tails when none is long enough for a
  sped-up clip). None when no footage is long enough, or there is none (TFRecord training),
  with a warning."""
  candidates = [(training_videos, False), (holdout_videos, True)]
  for videos, held_out in [(v, h) for v, h in candidates if v]:
    try:
      return check_and_save(model, cfg, videos, held_out, output_dir, speedup)
    except errors.DataError as error:
      logging.warning("Speed-up check on the %s footage skipped: %s",
                      "held-out" if held_out else "training", error)
  return None


def check_after_training(cfg: config_lib.Config, model: DAML,
                         training_videos: Sequence[layout.Video],
                         holdout_videos: Sequence[layout.Video]) -> Optional[SpeedupCheck]:
  """The end-of-training check. A diagnostic: footage too short for it does not fail a run that
  trained and calibrated."""
  return check_footage(model, cfg, training_videos, holdout_videos, cfg.train.model_dir)
