"""Frame scores that use where in the picture the latent error is, measured on a trained run.

    .venv/bin/python -m experiments.ped2_accuracy.spatial_score_ablation --data_dir=~/datasets \
        --model_dirs=pretrained/ped2_cpu --output=experiments/ped2_accuracy/results/spatial_scores.json

A fixed camera sees normal motion in some places and not in others, and a small object is one
blob of the picture; these scores try to use that, each from normal training frames only:
- `cell_z_*`, `cell_ratio_*`, `cell_exceed99`: each grid cell's error standardised by that cell's
  mean and spread (or divided by its mean, or what exceeds its 99% quantile) on training frames;
- `knn_*`: each cell's distance to its nearest training vector at the same place (3x3 cells
  around it, every 2nd training frame), for the prediction residual (z_hat - z) or for
  appearance and motion (z, z - z_last_input);
- `fg_mean_q*`: the mean error over foreground cells only (background-subtracted intensity above
  a quantile of the training frames'), so that a crowd does not count as many anomalies;
  `fg_blob_q*`: the highest mean error of a foreground blob (>= 4 cells);
- `fg_*_expected_*`: the error divided by (or minus) the error a normal frame with as much
  foreground has, from a line fitted on the training frames;
- `mirror_*`: test-time augmentation with the mirror image of each frame;
- `pooled_code_p*`: the squared error after average-pooling (z_hat - z) over p x p cells, a
  tolerance to small misplacements (a walker's stride) that a bike's should outgrow;
- `relative_sse`: the error divided by how far the observed code is from the training codes'
  mean (a crowd-free scale);
- `row_ratio_*`: each cell's error divided by its grid row's mean training error (plus a floor,
  a share of the overall mean): perspective, since a far walker is smaller and so is its error;
- `fusion_mean_top5`: `latent_mean` and `latent_top5`, each standardised by its mean and spread
  on the training frames, added;
- `recon_mse`, `fusion_recon`: the appearance model's own error (the target frame decoded from
  its code with the skips of the frame `interval` before it, pixel MSE), alone and standardised
  and added to `latent_mean`.
Reported with the paper's per-video min-max (micro, macro, EER, and with `gauss:3`) and raw
pooled (online). Host-side NumPy on error maps collected once; not part of the package because
none of them beat the paper's `latent_mean` (README, "Accuracy levers").
"""

import json

from absl import app
from absl import flags
import numpy as np
from scipy import ndimage
import tensorflow as tf

from daml_tf.evaluation import scoring as evaluation
from daml_tf import run_dir
from experiments.ped2_accuracy import score_ablation
from daml_tf import smoothing as smoothing_lib
from daml_tf.data import layout
from daml_tf.data import pipeline

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  flags.DEFINE_list("model_dirs", None, "Training run directories (or pretrained/ped2_cpu).",
                    flag_values=flag_values)
  flags.DEFINE_string("data_dir", "", "Where the runs' dataset is (default: as trained).",
                      flag_values=flag_values)
  flags.DEFINE_string("output", None, "The JSON file of results.", flag_values=flag_values)
  flags.DEFINE_bool("knn", True, "Also the nearest-neighbour scores (about 2 min per run).",
                    flag_values=flag_values)
  flags.DEFINE_list("fg_quantiles", ["0.9", "0.95", "0.99"],
                    "Foreground thresholds, as quantiles of the training frames' foreground.",
                    flag_values=flag_values)
  flags.mark_flags_as_required(["model_dirs", "output"], flag_values=flag_values)


def collect(model, cfg, videos):
  """Per scored frame: observed code, predicted code, last input's code, foreground map and the
  appearance model's reconstruction error."""
  motion = tf.function(lambda past: model.motion(past, training=False))
  background = model.background.numpy()
  out = {"z": [], "pred": [], "last": [], "fg": [], "recon": [], "video": [], "index": []}
  for number, video in enumerate(videos):
    frames = pipeline.load_video(video, cfg.data.image_size, cfg.data.channels, background)
    features = [np.concatenate(level) for level in zip(*(
        [f.numpy() for f in model.encode(frames[s:s + 64])] for s in range(0, len(frames), 64)))]
    codes = features[-1]
    clips = pipeline.clip_indices(len(frames), cfg.data.time_steps, cfg.data.interval,
                                  cfg.data.delta)
    pred = np.concatenate([motion(codes[clips[s:s + 64, :-1]]).numpy()
                           for s in range(0, len(clips), 64)])
    recon = np.concatenate([reconstruction_mse(model, features, frames, targets, cfg.data.interval)
                            for targets in np.array_split(clips[:, -1], max(1, len(clips) // 64))])
    grid_h, grid_w = codes.shape[1:3]
    # Foreground: mean absolute background-subtracted intensity of each grid cell's pixels.
    magnitude = np.abs(frames[clips[:, -1]]).mean(-1)
    fg = magnitude.reshape(len(clips), grid_h, magnitude.shape[1] // grid_h, grid_w,
                           magnitude.shape[2] // grid_w).mean((2, 4))
    for key, value in (("z", codes[clips[:, -1]]), ("pred", pred), ("last", codes[clips[:, -2]]),
                       ("fg", fg), ("recon", recon), ("video", np.full(len(clips), number)),
                       ("index", clips[:, -1])):
      out[key].append(value)
  return {key: np.concatenate(value) for key, value in out.items()}


def reconstruction_mse(model, features, frames, targets, interval):
  """[n] pixel MSE of the target frames decoded from their own codes with the skips of the
  frames `interval` before them (how the appearance model was trained)."""
  decoded = model.decoder([features[-1][targets]] + [level[targets - interval]
                                                     for level in features[:-1]],
                          training=False).numpy()
  return np.square(decoded - frames[targets]).mean((1, 2, 3))


def top_mean(maps, fraction):
  flat = maps.reshape(len(maps), -1)
  count = max(1, int(round(fraction * flat.shape[1])))
  return np.sort(flat, axis=1)[:, -count:].mean(1)


def knn_local_map(train_vectors, test_vectors, radius=1, stride=2):
  """[N, h, w] squared distance of each test cell to the nearest training vector near it."""
  bank_frames = train_vectors[::stride]
  n, grid_h, grid_w, _ = test_vectors.shape
  out = np.zeros((n, grid_h, grid_w), np.float32)
  for i in range(grid_h):
    for j in range(grid_w):
      bank = bank_frames[:, max(0, i - radius):i + radius + 1,
                         max(0, j - radius):j + radius + 1].reshape(-1, bank_frames.shape[-1])
      query = test_vectors[:, i, j]
      distances = ((query * query).sum(1)[:, None] - 2 * query @ bank.T +
                   (bank * bank).sum(1)[None])
      out[:, i, j] = np.maximum(distances.min(1), 0)
  return out


def blob_max_mean(error_maps, masks, min_cells=4):
  values = np.zeros(len(error_maps))
  for n, (error_map, mask) in enumerate(zip(error_maps, masks)):
    blobs, count = ndimage.label(mask)
    if not count:
      continue
    ids = np.arange(1, count + 1)
    sizes = ndimage.sum(np.ones_like(error_map), blobs, ids)
    means = ndimage.mean(error_map, blobs, ids)
    if (sizes >= min_cells).any():
      values[n] = means[sizes >= min_cells].max()
  return values


def pooled_code_error(predicted, observed, pool):
  """[N] mean squared error of (predicted - observed) averaged over pool x pool cells."""
  n, grid_h, grid_w, channels = predicted.shape
  diff = (predicted - observed)[:, :grid_h // pool * pool, :grid_w // pool * pool]
  diff = diff.reshape(n, grid_h // pool, pool, grid_w // pool, pool, channels).mean((2, 4))
  return np.square(diff).mean((1, 2, 3))


def relative_sse(predicted, observed, mean_code):
  """[N] sum of squared errors over the observed code's squared distance to `mean_code`."""
  return (np.square(predicted - observed).sum((1, 2, 3)) /
          np.maximum(np.square(observed - mean_code).sum((1, 2, 3)), 1e-12))


def row_ratio_map(train_maps, test_maps, floor):
  """[N, h, w] test error maps over their grid row's mean training error plus `floor` times the
  mean training error.

  Perspective: a far walker is smaller, so its error is too; each row's training error (every
  row, unlike every cell, has had walkers) sets that row's scale.
  """
  row_mean = train_maps.mean((0, 2))[None, :, None]
  return test_maps / (row_mean + floor * train_maps.mean())


def standardised_sum(train_parts, test_parts):
  """Each test score minus its training mean, over its training spread, added up."""
  return sum((test - train.mean()) / max(train.std(), 1e-12)
             for train, test in zip(train_parts, test_parts))


def variants(train, test, knn=True, fg_quantiles=(0.9, 0.95, 0.99)):
  """{name: [N] frame scores of the test frames}."""
  err_train = np.square(train["pred"] - train["z"]).mean(-1)
  err_test = np.square(test["pred"] - test["z"]).mean(-1)
  mean, std = err_train.mean(0), err_train.std(0)
  cell_z = (err_test - mean) / (std + 1e-3 * std.mean())
  cell_ratio = err_test / (mean + 1e-2 * mean.mean())
  scores = {
      "latent_mean": err_test.mean((1, 2)),
      "cell_z_mean": cell_z.mean((1, 2)),
      "cell_z_max": cell_z.reshape(len(cell_z), -1).max(1),
      "cell_z_top5": top_mean(cell_z, 0.05),
      "cell_ratio_mean": cell_ratio.mean((1, 2)),
      "cell_ratio_top5": top_mean(cell_ratio, 0.05),
      "cell_exceed99": np.clip(err_test - np.quantile(err_train, 0.99, axis=0), 0,
                               None).sum((1, 2)),
      "relative_sse": relative_sse(test["pred"], test["z"], train["z"].mean(0)),
      "fusion_mean_top5": standardised_sum(
          [err_train.mean((1, 2)), top_mean(err_train, 0.05)],
          [err_test.mean((1, 2)), top_mean(err_test, 0.05)]),
  }
  for floor in (0.1, 1.0):
    row_ratio = row_ratio_map(err_train, err_test, floor)
    scores[f"row_ratio_{floor}_mean"] = row_ratio.mean((1, 2))
    scores[f"row_ratio_{floor}_top5"] = top_mean(row_ratio, 0.05)
  for pool in (2, 4, 8):
    scores[f"pooled_code_p{pool}"] = pooled_code_error(test["pred"], test["z"], pool)
  descriptors = {
      "resid": lambda d: d["pred"] - d["z"],
      "z_dz": lambda d: np.concatenate([d["z"], d["z"] - d["last"]], -1),
  }
  for name, describe in (descriptors.items() if knn else ()):
    distances = knn_local_map(describe(train), describe(test))
    scores[f"knn_{name}_mean"] = distances.mean((1, 2))
    scores[f"knn_{name}_top5"] = top_mean(distances, 0.05)
    scores[f"knn_{name}_max"] = distances.reshape(len(distances), -1).max(1)
  for quantile in fg_quantiles:
    masks = test["fg"] > np.quantile(train["fg"], quantile)
    scores[f"fg_mean_q{quantile}"] = ((err_test * masks).sum((1, 2)) /
                                      np.maximum(masks.sum((1, 2)), 1))
    scores[f"fg_blob_q{quantile}"] = blob_max_mean(err_test, masks)
  # How much error a normal frame has given how much foreground it has (a line fitted on the
  # training frames): a crowd raises the error of every frame it is in.
  for name, amount in (("fg_mean", lambda d: d["fg"].mean((1, 2))),
                       ("fg_area90", lambda d: (d["fg"] > np.quantile(train["fg"], 0.9)
                                                ).mean((1, 2)))):
    slope, intercept = np.polyfit(amount(train), err_train.mean((1, 2)), 1)
    expected = intercept + slope * amount(test)
    scores[f"{name}_expected_ratio"] = err_test.mean((1, 2)) / np.maximum(expected, 1e-4)
    scores[f"{name}_expected_resid"] = err_test.mean((1, 2)) - expected
  scores["recon_mse"] = test["recon"]
  scores["fusion_recon"] = standardised_sum([err_train.mean((1, 2)), train["recon"]],
                                            [err_test.mean((1, 2)), test["recon"]])
  return scores


def mirrored_scores(model, cfg, videos):
  """The paper's score of each test frame's mirror image (background subtracted first, so the
  mirrored background is subtracted too), in the order `collect` gives the frames."""
  scorer = evaluation.VideoScorer(model, cfg.data, cfg.eval.batch_size)
  background = model.background.numpy()
  mirrored = []
  for video in videos:
    frames = pipeline.load_video(video, cfg.data.image_size, cfg.data.channels, background)
    mirrored.append(scorer.score(np.ascontiguousarray(frames[:, :, ::-1]))[1])
  return np.concatenate(mirrored)


def metrics(values, test, labels):
  """score_ablation's row (micro, macro, EER, online) plus the micro AUC under gauss:3."""
  videos = np.unique(test["video"])
  per_video = [values[test["video"] == v].astype(np.float64) for v in videos]
  video_labels = [labels[v][test["index"][test["video"] == v]] for v in videos]
  row = score_ablation.metrics_row(per_video, video_labels, smoothing_lib.parse("none"))
  row["micro_auc_gauss3"] = score_ablation.metrics_row(
      per_video, video_labels, smoothing_lib.parse("gauss:3"))["micro_auc"]
  return row


def ablate_run(model_dir):
  cfg, model = run_dir.restore_run(model_dir, FLAGS.data_dir)
  _, train_videos = layout.find_videos(cfg.data.dataset, cfg.data.data_dir, "training")
  test_videos, labels = evaluation.test_split(cfg)
  train, test = collect(model, cfg, train_videos), collect(model, cfg, test_videos)
  scores = variants(train, test, FLAGS.knn, [float(q) for q in FLAGS.fg_quantiles])
  # Test-time augmentation: the frame's score (collected above) and its mirror image's, averaged.
  scores["mirror_only"] = mirrored_scores(model, cfg, test_videos)
  scores["mirror_tta_mean"] = (scores["latent_mean"] + scores["mirror_only"]) / 2
  results = {name: metrics(values, test, labels) for name, values in scores.items()}
  for name, row in results.items():
    print(f"{model_dir} {name:20s} {row}", flush=True)
  return results


def main(argv):
  del argv
  results = {model_dir: ablate_run(model_dir) for model_dir in FLAGS.model_dirs}
  with open(FLAGS.output, "w") as f:
    json.dump(results, f, indent=1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
