"""Tests of the tf.data input pipeline (daml_tf.data.pipeline)."""

import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import testing
from daml_tf import config
from daml_tf.data import layout
from daml_tf.data import pipeline
from daml_tf.data import registry
from daml_tf.errors import DataError

SPEC = registry.get_spec("synthetic")
# ITU-R 601 luma, the weights of tf.image.rgb_to_grayscale.
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)


def _save(path, pixels):
  Image.fromarray(pixels).save(path)
  return path


def _pixels(shape, seed=0):
  return np.random.RandomState(seed).randint(0, 256, size=shape).astype(np.uint8)


def _decode_in_dataset(path, image_size, channels):
  dataset = tf.data.Dataset.from_tensor_slices([path]).map(
      lambda p: pipeline.decode_frame(p, image_size, channels))
  return next(iter(dataset)).numpy()


# ----------------------------------------------------------------------------------------------
# Clip indices.


def test_clip_indices_hand_written():
  rows = pipeline.clip_indices(10, time_steps=3, interval=2, delta=1)
  np.testing.assert_array_equal(rows, [[0, 2, 4, 5], [1, 3, 5, 6], [2, 4, 6, 7], [3, 5, 7, 8],
                                       [4, 6, 8, 9]])
  assert rows.dtype == np.int64
  np.testing.assert_array_equal(pipeline.clip_indices(6, 2, 1, 3), [[0, 1, 4], [1, 2, 5]])


def test_clip_indices_empty():
  assert pipeline.clip_indices(5, 3, 2, 1).shape == (0, 4)
  assert pipeline.clip_indices(0, 8, 2, 6).shape == (0, 9)
  assert pipeline.clip_indices(21, 8, 2, 6).shape == (1, 9)  # span 20: exactly one clip.


def test_count_clips_matches_clip_indices():
  cfg = config.DataConfig(time_steps=3, interval=2, delta=1)
  videos = [layout.Video(str(n), tuple(map(str, range(n)))) for n in (10, 3, 7)]
  assert pipeline.count_clips(videos, cfg) == 5 + 0 + 2


# ----------------------------------------------------------------------------------------------
# Decoding.


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif"])
def test_lossless_formats_decode_exactly(tmp_path, ext):
  rgb = _pixels((12, 20, 3))
  gray = _pixels((12, 20), seed=1)
  rgb_path = _save(str(tmp_path / f"rgb{ext}"), rgb)
  gray_path = _save(str(tmp_path / f"gray{ext}"), gray)
  size = (12, 20)  # Unchanged size: bilinear resizing is then the identity.
  for path in (rgb_path, gray_path):
    for channels in (1, 3):
      eager = pipeline.decode_frame(tf.constant(path), size, channels).numpy()
      assert eager.shape == (12, 20, channels) and eager.dtype == np.float32
      np.testing.assert_array_equal(eager, _decode_in_dataset(path, size, channels))
  rgb_f = rgb.astype(np.float32) / 255
  np.testing.assert_allclose(pipeline.decode_frame(rgb_path, size, 3).numpy(), rgb_f, atol=1e-6)
  np.testing.assert_allclose(pipeline.decode_frame(rgb_path, size, 1).numpy()[..., 0],
                             rgb_f @ GRAY_WEIGHTS, atol=1e-5)
  gray_f = gray.astype(np.float32) / 255
  if ext == ".tif":
    # TIFFs decode as RGBA (as tensorflow-io's decode_tiff did), so gray goes through rgb_to_grayscale,
    # whose weights sum to 0.9999.
    np.testing.assert_allclose(pipeline.decode_frame(gray_path, size, 1).numpy()[..., 0],
                               gray_f, atol=2e-4)
  else:
    np.testing.assert_allclose(pipeline.decode_frame(gray_path, size, 1).numpy()[..., 0],
                               gray_f, atol=1e-6)
  np.testing.assert_allclose(pipeline.decode_frame(gray_path, size, 3).numpy(),
                             np.repeat(gray_f[..., None], 3, axis=-1), atol=2e-4)


@pytest.mark.parametrize("ext", [".png", ".bmp", ".jpg", ".tif"])
def test_eight_bit_levels_scale_like_convert_image_dtype(tmp_path, ext):
  # Every level once; for JPEG a flat image, which survives compression exactly.
  levels = (np.arange(256, dtype=np.uint8).reshape(16, 16) if ext != ".jpg" else
            np.full((16, 16), 77, np.uint8))
  path = _save(str(tmp_path / f"levels{ext}"), levels)
  channels = 3 if ext == ".tif" else 1  # TIFFs decode as RGBA; gray would be reweighted.
  expected = tf.image.convert_image_dtype(levels, tf.float32).numpy()
  decoded = pipeline.decode_frame(path, (16, 16), channels).numpy()
  for channel in range(channels):
    np.testing.assert_array_equal(decoded[..., channel], expected)


def test_sixteen_bit_png_keeps_its_precision(tmp_path):
  pixels = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257 + 3)
  path = str(tmp_path / "deep.png")
  Image.fromarray(pixels).save(path)
  np.testing.assert_allclose(pipeline.decode_frame(path, (16, 16), 1).numpy()[..., 0],
                             pixels / 65535, atol=1e-7)


def test_jpeg_matches_pil_and_resizes(tmp_path):
  path = _save(str(tmp_path / "frame.jpg"), _pixels((30, 40, 3)))
  with Image.open(path) as image:
    pil = np.asarray(image.convert("RGB"), np.float32) / 255
  decoded = pipeline.decode_frame(tf.constant(path), (30, 40), 3).numpy()
  # Same libjpeg IDCT as PIL; allow one level for a different libjpeg build.
  assert np.abs(decoded - pil).max() <= 1 / 255 + 1e-6
  for channels in (1, 3):
    resized = pipeline.decode_frame(tf.constant(path), (16, 24), channels).numpy()
    assert resized.shape == (16, 24, channels)
    assert 0 <= resized.min() and resized.max() <= 1
    np.testing.assert_array_equal(resized, _decode_in_dataset(path, (16, 24), channels))


def test_rgba_png_drops_alpha(tmp_path):
  rgba = _pixels((8, 10, 4))
  path = _save(str(tmp_path / "rgba.png"), rgba)
  np.testing.assert_allclose(pipeline.decode_frame(path, (8, 10), 3).numpy(),
                             rgba[..., :3].astype(np.float32) / 255, atol=1e-6)


def test_decode_frames_in_order(tmp_path):
  images = [_pixels((8, 10), seed=i) for i in range(5)]
  paths = [_save(str(tmp_path / f"{i}.png"), im) for i, im in enumerate(images)]
  frames = pipeline.decode_frames(paths, (8, 10), 1, batch_size=2)
  assert frames.shape == (5, 8, 10, 1) and frames.dtype == np.float32
  np.testing.assert_allclose(frames[..., 0], np.stack(images).astype(np.float32) / 255,
                             atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Background.


def test_background_is_mean_of_decoded_frames(frames_dataset):
  root = frames_dataset(rgb=True)
  paths = [p for v in layout.list_videos(root, "training", SPEC) for p in v.frame_paths]
  for channels in (1, 3):
    frames = pipeline.decode_frames(paths, (16, 24), channels)
    background = pipeline.compute_background(paths, (16, 24), channels, batch_size=5)
    assert background.shape == (16, 24, channels) and background.dtype == np.float32
    np.testing.assert_allclose(background, frames.astype(np.float64).mean(axis=0), atol=1e-6)


def test_load_or_compute_background(frames_dataset, tmp_path):
  root = frames_dataset()
  videos = layout.list_videos(root, "training", SPEC)
  saved = str(tmp_path / "run" / "model" / "background.npy")
  computed = pipeline.load_or_compute_background(saved, videos, (16, 24), 1)
  np.testing.assert_array_equal(np.load(saved), computed)
  # A stored background is read, not recomputed.
  np.save(saved, np.full((16, 24, 1), 0.25, np.float32))
  np.testing.assert_array_equal(
      pipeline.load_or_compute_background(saved, videos, (16, 24), 1), 0.25)
  # One of another resolution is replaced.
  recomputed = pipeline.load_or_compute_background(saved, videos, (8, 12), 1)
  assert recomputed.shape == (8, 12, 1)
  assert np.load(saved).shape == (8, 12, 1)


# ----------------------------------------------------------------------------------------------
# Clips.


def _cfg(cache, **kwargs):
  values = dict(image_height=16, image_width=24, channels=1, time_steps=3, interval=2, delta=1,
                batch_size=4, frame_cache=cache, seed=3)
  values.update(kwargs)
  return config.DataConfig(**values)


def _batches(dataset):
  return np.concatenate([b.numpy() for b in dataset], axis=0)


def test_clips_equal_numpy_gather_for_both_caches(frames_dataset):
  root = frames_dataset()  # Training videos of 12 and 10 frames.
  videos = layout.list_videos(root, "training", SPEC)
  cfg = _cfg("memory")
  frames = np.concatenate([pipeline.decode_frames(v.frame_paths, cfg.image_size, 1)
                           for v in videos])
  background = frames.mean(axis=0)
  expected_rows = np.concatenate([pipeline.clip_indices(12, 3, 2, 1),
                                  pipeline.clip_indices(10, 3, 2, 1) + 12])
  expected = frames[expected_rows] - background

  memory = pipeline.training_dataset(videos, background, cfg, training=False)
  none = pipeline.training_dataset(videos, background, _cfg("none"), training=False)
  assert memory.num_clips == none.num_clips == len(expected_rows) == 7 + 5
  for data in (memory, none):
    assert data.dataset.element_spec.shape.as_list() == [None, 4, 16, 24, 1]
    assert data.dataset.element_spec.dtype == tf.float32
    clips = _batches(data.dataset)
    assert clips.shape == (12, 4, 16, 24, 1)  # Last partial batch kept.
    np.testing.assert_array_equal(clips, expected)


def test_training_mode_shuffles_repeats_and_batches(frames_dataset):
  root = frames_dataset(rgb=True)
  videos = layout.list_videos(root, "training", SPEC)
  for cache in ("memory", "none"):
    cfg = _cfg(cache, channels=3, batch_size=5)
    background = np.zeros((16, 24, 3), np.float32)
    data = pipeline.training_dataset(videos, background, cfg, training=True)
    assert data.dataset.element_spec.shape.as_list() == [5, 4, 16, 24, 3]
    assert data.steps_per_epoch() == 12 // 5
    assert data.steps_per_epoch(clips_per_epoch=100) == 20
    # 6 batches of 5 = 30 clips > 12: the dataset repeats.
    first = [b.numpy() for b in data.dataset.take(6)]
    assert all(b.shape == (5, 4, 16, 24, 3) for b in first)
    ordered = _batches(pipeline.training_dataset(videos, background, cfg, False).dataset)
    epoch = np.concatenate(first)[:12]
    # One pass holds every clip once, in another order.
    assert not np.array_equal(epoch, ordered)
    np.testing.assert_array_equal(np.sort(epoch.reshape(12, -1), axis=0),
                                  np.sort(ordered.reshape(12, -1), axis=0))
    again = pipeline.training_dataset(videos, background, cfg, training=True)
    np.testing.assert_array_equal(next(iter(again.dataset)).numpy(), first[0])  # Seeded.


@pytest.mark.parametrize("cache", ["memory", "none"])
@pytest.mark.parametrize("pipelines, replicas", [(None, None), (2, 2), (1, 2)])
def test_batches_drawn_continues_the_stream(frames_dataset, cache, pipelines, replicas):
  """A resumed run's dataset yields what the uninterrupted stream yields after the batches
  already drawn (across the end of a pass), whatever share of a step this pipeline feeds."""
  root = frames_dataset()  # 7 + 5 clips: 4 global steps of 4 cross the end of the first pass.
  videos = layout.list_videos(root, "training", SPEC)
  background = np.zeros((16, 24, 1), np.float32)
  context = _context(pipelines, 0, replicas) if pipelines else None
  # A global step draws one per-replica batch for each replica this pipeline feeds.
  per_step = replicas // pipelines if pipelines else 1

  def batches(drawn, count):
    data = pipeline.training_dataset(videos, background, _cfg(cache), training=True,
                                     input_context=context, batches_drawn=drawn,
                                     pseudo_speeds=(2,))
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in data.dataset.take(count)]

  uninterrupted = batches(0, 6 * per_step)
  resumed = batches(4, 2 * per_step)
  for got, want in zip(resumed, uninterrupted[4 * per_step:]):
    for got_part, want_part in zip(got, want):  # (clips, pseudo-anomalous clips)
      np.testing.assert_array_equal(got_part, want_part)
  with pytest.raises(ValueError, match="training only"):
    pipeline.training_dataset(videos, background, _cfg(cache), training=False, batches_drawn=1)


def _context(pipelines, pipeline_id, replicas):
  return tf.distribute.InputContext(num_input_pipelines=pipelines,
                                    input_pipeline_id=pipeline_id,
                                    num_replicas_in_sync=replicas)


def test_sharding_by_clip_index_across_input_pipelines(frames_dataset):
  root = frames_dataset()  # Training videos of 12 and 10 frames: 7 + 5 clips.
  videos = layout.list_videos(root, "training", SPEC)
  background = np.full((16, 24, 1), 0.5, np.float32)
  for cache in ("memory", "none"):
    cfg = _cfg(cache)
    everything = _batches(pipeline.training_dataset(videos, background, cfg, False).dataset)
    parts = []
    for pipeline_id in range(2):
      data = pipeline.training_dataset(videos, background, cfg, training=False,
                                       input_context=_context(2, pipeline_id, 2))
      assert data.batch_size == 2 and data.global_batch_size == 4
      assert data.num_clips == 6 and data.total_clips == 12
      # Global steps, the same on every pipeline.
      assert data.steps_per_epoch() == 3 and data.steps_per_epoch(clips_per_epoch=20) == 5
      parts.append(_batches(data.dataset))
    # Contiguous ranges of the clip table: disjoint, together everything, in order.
    np.testing.assert_array_equal(np.concatenate(parts), everything)
  # One pipeline feeding two replicas: every clip, per-replica batches.
  data = pipeline.training_dataset(videos, background, cfg, training=True,
                                   input_context=_context(1, 0, 2))
  assert data.num_clips == 12 and data.steps_per_epoch() == 3
  assert next(iter(data.dataset)).shape[0] == 2
  with pytest.raises(DataError, match="cannot be split evenly over 3 replicas"):
    pipeline.training_dataset(videos, background, cfg, input_context=_context(1, 0, 3))


def test_training_dataset_rejects_short_videos(frames_dataset):
  root = frames_dataset(videos={"training": {"01": 12, "02": 4}})
  videos = layout.list_videos(root, "training", SPEC)
  with pytest.raises(DataError, match=r"02 \(4 frames\)"):
    pipeline.training_dataset(videos, np.zeros((16, 24, 1), np.float32), _cfg("memory"))


def test_load_video(frames_dataset):
  root = frames_dataset()
  video = layout.list_videos(root, "testing", SPEC)[1]
  background = np.full((16, 24, 1), 0.5, np.float32)
  frames = pipeline.load_video(video, (16, 24), 1, background)
  assert frames.shape == (11, 16, 24, 1) and frames.dtype == np.float32
  np.testing.assert_array_equal(
      frames, pipeline.decode_frames(video.frame_paths, (16, 24), 1) - background)


# ----------------------------------------------------------------------------------------------
# Undecodable frames are named.


def _corrupt(root, kind):
  video_dir = os.path.join(root, "training", "frames", "02")
  if kind == "truncated_jpeg":
    good = _save(os.path.join(video_dir, "good.jpg"), _pixels((24, 32)))
    with open(good, "rb") as f:
      data = f.read()
    os.remove(good)
    path = os.path.join(video_dir, "005.jpg")
    with open(path, "wb") as f:
      f.write(data[:len(data) // 2])
  else:
    path = os.path.join(video_dir, "005.png")
    with open(path, "w") as f:
      f.write("this is not an image\n")
  return path


@pytest.mark.parametrize("kind", ["truncated_jpeg", "text_as_png"])
def test_bad_frame_is_named(frames_dataset, kind):
  root = frames_dataset(videos={"training": {"01": 12, "02": 10}})
  bad = _corrupt(root, kind)
  if kind == "truncated_jpeg":
    os.remove(bad.replace(".jpg", ".png"))
  videos = layout.list_videos(root, "training", SPEC)
  assert bad in videos[1].frame_paths
  paths = [p for v in videos for p in v.frame_paths]
  background = np.zeros((16, 24, 1), np.float32)
  calls = [
      lambda: pipeline.compute_background(paths, (16, 24), 1, batch_size=4),
      lambda: pipeline.decode_frames(paths, (16, 24), 1),
      lambda: pipeline.load_video(videos[1], (16, 24), 1, background),
      lambda: pipeline.training_dataset(videos, background, _cfg("memory")),
  ]
  for call in calls:
    with pytest.raises(DataError) as error:
      call()
    assert bad in str(error.value)


def test_pseudo_anomaly_clips_hand_made():
  # 12 frames, k=2, interval 1, delta 1; speed 2: inputs 2 apart, target 2 after the last.
  got = pipeline.pseudo_anomaly_clip_indices(12, time_steps=2, interval=1, delta=1,
                                             speeds=(2, 3))
  speed2 = [[j, j + 2, j + 4] for j in range(8)]
  speed3 = [[j, j + 3, j + 6] for j in range(6)]
  np.testing.assert_array_equal(got, speed2 + speed3)
  assert pipeline.pseudo_anomaly_clip_indices(5, 2, 1, 1, speeds=(3,)).shape == (0, 3)


def test_training_dataset_pairs_clips_with_pseudo_anomalous_ones(tmp_path):
  root = testing.write_frames_dataset(str(tmp_path), {"training": {"01": 30}})
  _, videos = layout.find_videos("synthetic", root, "training")
  cfg = testing.tiny_config(root).data
  background = np.zeros(cfg.image_size + (cfg.channels,), np.float32)
  data = pipeline.training_dataset(videos, background, cfg, pseudo_speeds=(2,))
  clips, pseudo = next(iter(data.dataset))
  assert clips.shape == pseudo.shape == (cfg.batch_size, cfg.time_steps + 1) + cfg.image_size + (
      cfg.channels,)
  with pytest.raises(DataError, match="pseudo-anomalous"):
    pipeline.training_dataset(videos, background, cfg, pseudo_speeds=(40,))
