"""Motion evidence in the score: optical flow pooled to the latent grid, its per-row
normalisation, the weighting of the latent error, and the commands that fit and use them."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from daml_tf import errors
from daml_tf import run_dir
from daml_tf.data import layout
from daml_tf.data import motion_maps
from daml_tf.data import video_io
from daml_tf.inference import backends
from daml_tf.inference import multistream
from daml_tf.inference import streaming
from daml_tf.models import scores
import testing


def _inputs(error_map, motion):
  """ScoreInputs whose latent error map is `error_map` ([B, h, w]): the observed code is zero
  and the predicted code carries sqrt(error) in each of its 2 channels."""
  error_map = np.asarray(error_map, np.float32)
  predicted = np.repeat(np.sqrt(error_map)[..., None], 2, axis=-1)
  return scores.ScoreInputs(predicted, np.zeros_like(predicted),
                            motion=np.asarray(motion, np.float32))


def test_motion_weighted_and_product_against_a_hand_computation():
  errors_ = [[[1.0, 2.0], [3.0, 4.0]]]
  motion = [[[0.0, 0.5], [1.0, 2.0]]]
  inputs = _inputs(errors_, motion)
  # (1*(1+0) + 2*(1+2) + 3*(1+4) + 4*(1+8)) / 4 = (1 + 6 + 15 + 36) / 4
  assert scores.compute("motion_weighted", inputs).numpy() == pytest.approx([14.5])
  # (0 + 1 + 3 + 8) / 4
  assert scores.compute("motion_product", inputs).numpy() == pytest.approx([3.0])
  # The host weighting of the streaming runtimes is the same maths.
  values, weighted = scores.host_weigher("motion_weighted")(
      np.asarray(errors_, np.float32), np.asarray(motion, np.float32))
  assert values == pytest.approx([14.5])
  # The weighted map (the heatmap, and what a mask averages): each cell's term.
  np.testing.assert_allclose(weighted, [[[1.0, 6.0], [15.0, 36.0]]])
  # Where nothing moves, motion_weighted is the paper's score and the product is zero.
  still = _inputs(errors_, np.zeros((1, 2, 2)))
  assert scores.compute("motion_weighted", still).numpy() == pytest.approx(
      scores.compute("latent_mean", still).numpy())
  assert scores.compute("motion_product", still).numpy() == pytest.approx([0.0])


def test_a_motion_score_without_motion_maps_says_so():
  with pytest.raises(ValueError, match="motion maps"):
    scores.compute("motion_weighted", scores.ScoreInputs(np.ones((1, 2, 2, 1), np.float32),
                                                         np.zeros((1, 2, 2, 1), np.float32)))


def _square_frames(num_frames, step, size=(96, 144), top=40):
  """uint8 [N, H, W]: a textured square moving `step` pixels right per frame over a static
  textured background."""
  rng = np.random.default_rng(0)
  background = rng.integers(60, 120, size).astype(np.uint8)
  texture = rng.integers(150, 255, (24, 24)).astype(np.uint8)
  frames = []
  for t in range(num_frames):
    frame = background.copy()
    left = 20 + step * t
    frame[top:top + 24, left:left + 24] = texture
    frames.append(frame)
  return np.stack(frames)


def test_flow_speed_is_high_where_the_square_moves_and_near_zero_elsewhere():
  frames = _square_frames(6, step=3)
  speeds = motion_maps.video_speed(frames, grid=(12, 18), scale=1.0)
  assert speeds.shape == (6, 12, 18) and not speeds[0].any()  # No pair for the first frame.
  # Frame 3: the square covers rows 40-63, columns 29-52, cells of 8x8 pixels: rows 5-7,
  # columns 4-6 lie inside it.
  inside = speeds[3, 5:8, 4:6]
  far = speeds[3, :3, 12:]
  assert inside.mean() == pytest.approx(3.0, abs=1.0)
  assert far.max() < 0.3


def test_flow_at_a_fraction_of_the_resolution_measures_its_own_pixels():
  frames = _square_frames(6, step=4)
  half = motion_maps.video_speed(frames, grid=(12, 18), scale=0.5)
  # 4 pixels per frame at full resolution are 2 at half.
  assert half[3, 5:8, 4:6].mean() == pytest.approx(2.0, abs=0.8)


def test_fit_norm_takes_each_rows_quantile_and_floors_a_still_row():
  speeds = np.zeros((101, 3, 4), np.float32)
  speeds[1:, 0, :] = np.arange(100, dtype=np.float32).reshape(100, 1) / 10  # 0.0 .. 9.9
  speeds[1:, 1, :] = 2.0
  # Row 2 never moves. Frame 0 of a video has no pair and is left out (its 1e6 is ignored).
  speeds[0] = 1e6
  norm = motion_maps.fit_norm([speeds], scale=0.5, quantile=0.5)
  assert norm.grid == (3, 4) and norm.scale == 0.5 and norm.pairs == 100
  assert norm.row_scale[0] == pytest.approx(np.quantile(np.arange(100) / 10, 0.5))
  assert norm.row_scale[1] == pytest.approx(2.0)
  # Floored at 5% of the whole grid's median (2.0 here: rows 0 and 1 hold two thirds).
  whole = np.quantile(speeds[1:], 0.5)
  assert norm.row_scale[2] == pytest.approx(0.05 * whole)
  maps = norm.normalize(speeds[1:2])
  np.testing.assert_allclose(maps[0, 1], 1.0)
  with pytest.raises(errors.DataError):
    motion_maps.fit_norm([speeds[:1]], scale=1.0)


def test_tracker_gives_the_video_maps_frame_by_frame_and_forgets_on_reset():
  frames = _square_frames(5, step=3)
  norm = motion_maps.fit_norm([motion_maps.video_speed(frames, (12, 18), 1.0)], scale=1.0)
  tracker = motion_maps.MotionTracker(norm)
  streamed = np.stack([tracker.update(frame) for frame in frames])
  np.testing.assert_allclose(
      streamed, norm.normalize(motion_maps.video_speed(frames, (12, 18), 1.0)), rtol=1e-6)
  tracker.reset()
  assert not tracker.update(frames[3]).any()
  # RGB and float frames are made gray as the detectors take them.
  rgb = np.repeat(frames[..., None], 3, axis=-1)
  assert motion_maps.to_gray(rgb[0]).shape == frames[0].shape
  np.testing.assert_array_equal(motion_maps.to_gray(frames[0] / np.float32(255)), frames[0])


def test_norm_is_stored_in_the_run_directory(tmp_path):
  norm = motion_maps.MotionNorm(scale=0.5, grid=(2, 3), row_scale=(1.5, 2.5), pairs=7)
  assert run_dir.load_motion_norm(str(tmp_path)) is None
  run_dir.save_motion_norm(str(tmp_path), norm)
  assert run_dir.load_motion_norm(str(tmp_path)) == norm
  (tmp_path / run_dir.MOTION_NORM_FILE).write_text(json.dumps({"scale": 1}))
  with pytest.raises(errors.DataError, match=run_dir.MOTION_NORM_FILE):
    run_dir.load_motion_norm(str(tmp_path))


def test_a_detector_of_a_motion_score_without_a_norm_says_to_calibrate(tmp_path):
  testing.make_run(tmp_path / "run", {"threshold": 0.5, "quantile": 0.99})
  with pytest.raises(errors.ConfigError, match="daml_tf.calibrate --score=motion_weighted"):
    streaming.StreamingDetector.from_model_dir(str(tmp_path / "run"), score="motion_weighted",
                                               threshold=1.0)


@pytest.fixture(scope="module")
def motion_run(tmp_path_factory):
  """A tiny run calibrated for motion_weighted by the calibrate command on moving frames, then
  exported (SavedModel and LiteRT) by the export command."""
  root = tmp_path_factory.mktemp("motion")
  for name, seed in (("01", 0), ("02", 1)):
    testing.write_pngs(root / "normal" / "training" / "frames" / name,
                       testing.moving_frames(20, seed=seed))
  model_dir = root / "run"
  cfg, model = testing.make_run(model_dir, {"threshold": 0.5, "quantile": 0.99})
  result = subprocess.run(
      [sys.executable, "-m", "daml_tf.calibrate", f"--model_dir={model_dir}",
       f"--videos_dir={root / 'normal'}", "--score=motion_weighted", "--flow_scale=0.5"],
      cwd=testing.REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  result = subprocess.run(
      [sys.executable, "-m", "daml_tf.export", f"--model_dir={model_dir}",
       f"--export_dir={model_dir / 'export'}", "--tflite"],
      cwd=testing.REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return cfg, model, model_dir, root


def test_calibrate_fits_the_norm_on_the_normal_footage_and_thresholds_the_motion_score(
    motion_run):
  _, model, model_dir, root = motion_run
  norm = run_dir.load_motion_norm(str(model_dir))
  assert norm.scale == 0.5 and norm.grid == testing.LATENT[:2]
  assert norm.pairs == 2 * 19
  threshold = run_dir.load_threshold(str(model_dir))
  assert threshold["score"] == "motion_weighted"
  # The norm is the one fitted by hand on the same frames.
  from daml_tf.evaluation import calibration  # pylint: disable=g-import-not-at-top
  _, videos = layout.find_videos("synthetic", str(root / "normal"), "training")
  assert calibration.fit_motion_norm(model, videos, 0.5) == norm


@pytest.mark.parametrize("where,rtol", [("", 1e-5), ("export", 1e-5), ("export/litert", 1e-4)])
def test_every_runtime_opens_the_norm_and_scores_as_evaluate(motion_run, tmp_path, where, rtol):
  """The run, its SavedModel and its LiteRT export each carry the norm and the motion score;
  their streamed scores are those of the evaluation's scorer on the same video."""
  cfg, model, model_dir, _ = motion_run
  opened = backends.open_model(str(model_dir / where))
  assert opened.motion_norm == run_dir.load_motion_norm(str(model_dir))
  folder = testing.write_pngs(tmp_path / "video", testing.moving_frames(24, seed=5))
  detector = streaming.StreamingDetector.from_model_dir(str(model_dir / where))
  assert detector.score_name == "motion_weighted" and detector.threshold is not None
  streamed = [detector.process(frame) for _, _, frame in video_io.iter_frames(folder)]
  from daml_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  from daml_tf.evaluation import scoring  # pylint: disable=g-import-not-at-top
  run_cfg = run_dir.load_config(str(model_dir))
  run_cfg = run_cfg.replace(eval=dataclasses.replace(run_cfg.eval, score="motion_weighted"))
  scorer = scoring.scorer_for(model, run_cfg, str(model_dir))
  video = layout.Video("video", tuple(video_io.list_frame_files(folder)))
  frames = pipeline.load_video(video, cfg.data.image_size, cfg.data.channels,
                               model.background.numpy())
  indices, expected = scorer.score(frames, scorer.motion_of(video))
  np.testing.assert_allclose([r.score for r in streamed if r.score is not None], expected,
                             rtol=rtol, atol=1e-8)
  assert [r.index for r in streamed if r.score is not None] == list(indices)
  # The motion changes the score: it is not the paper's.
  plain = scoring.VideoScorer(model, cfg.data, 8).score(frames)[1]
  assert not np.allclose(plain, expected, rtol=1e-3)
  detector.close()


def test_several_streams_each_track_their_own_motion(motion_run):
  _, _, model_dir, _ = motion_run
  detector = multistream.MultiStreamDetector.from_model_dir(str(model_dir), ("a", "b"))
  single = streaming.StreamingDetector.from_model_dir(str(model_dir))
  a, b = testing.moving_frames(12, seed=1), testing.moving_frames(12, seed=2)
  results = [detector.step({"a": fa, "b": fb}) for fa, fb in zip(a, b)]
  alone = [single.process(frame) for frame in b]
  np.testing.assert_allclose([r["b"].score for r in results if r["b"].score is not None],
                             [r.score for r in alone if r.score is not None], rtol=1e-5)
  detector.close()
  single.close()


def test_detect_command_takes_the_motion_score_of_an_export(motion_run, tmp_path):
  cfg, _, model_dir, _ = motion_run
  folder = testing.write_pngs(tmp_path / "video", testing.moving_frames(16, seed=3))
  result = testing.run_detect(f"--model_dir={model_dir / 'export' / 'litert'}",
                              f"--input={folder}", f"--output_dir={tmp_path / 'out'}")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = testing.csv_rows(tmp_path / "out" / "scores.csv")
  assert sum(1 for row in rows if row["score"]) == 16 - cfg.data.clip_span


def test_the_service_scores_several_cameras_with_the_motion_score_and_masks_its_weighted_map(
    motion_run, tmp_path):
  """Two cameras of one model in the service, one under a mask of its left half: the
  unmasked camera's scores are the streaming detector's; the masked one's are the mean of the
  detector's motion-weighted map over the cells left (service.masks)."""
  import yaml  # pylint: disable=g-import-not-at-top
  from daml_tf.service import config as service_config  # pylint: disable=g-import-not-at-top
  from daml_tf.service import masks as masks_lib  # pylint: disable=g-import-not-at-top
  _, _, model_dir, _ = motion_run
  frames = {"gate": testing.moving_frames(14, seed=6), "yard": testing.moving_frames(14, seed=7)}
  cameras = {name: {"input": str(testing.write_pngs(tmp_path / name, video)),
                    "model_dir": str(model_dir), "fps": 10, "score": "motion_weighted"}
             for name, video in frames.items()}
  left_half = "0,0,0.5,0,0.5,1,0,1"
  cameras["yard"]["masks"] = [left_half]
  config = tmp_path / "cameras.yaml"
  config.write_text(yaml.safe_dump({"cameras": cameras,
                                    "record": {"output_dir": str(tmp_path / "out")}}))
  result = subprocess.run([sys.executable, "-m", "daml_tf.serve", f"--config={config}",
                           "--log_every=0"], cwd=testing.REPO, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-5000:]
  for name, video in frames.items():
    detector = streaming.StreamingDetector.from_model_dir(str(model_dir))
    expected = []
    for frame in video:
      streamed = detector.process(frame)
      if streamed.score is None:
        expected.append(None)
      elif name == "gate":
        expected.append(streamed.score)
        # The score is the mean of the weighted map the result carries (the heatmap's).
        assert streamed.error_map.mean() == pytest.approx(streamed.score, rel=1e-5)
      else:
        weights = masks_lib.cell_mask([service_config.parse_polygon(left_half)],
                                      streamed.error_map.shape)
        expected.append(masks_lib.masked_mean(streamed.error_map, weights))
    rows = testing.csv_rows(tmp_path / "out" / name / "scores.csv")
    got = [float(row["score"]) if row["score"] else None for row in rows]
    assert [g is None for g in got] == [e is None for e in expected]
    np.testing.assert_allclose([g for g in got if g is not None],
                               [e for e in expected if e is not None], rtol=1e-4)
