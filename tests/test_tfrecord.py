"""Tests of the TFRecord writer and reader (daml_tf.data.tfrecord, daml_tf.data.to_tfrecord)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import testing
from testing import write_frames_dataset
from daml_tf import config
from daml_tf import cli
from daml_tf.data import layout
from daml_tf.data import pipeline
from daml_tf.data import registry
from daml_tf.data import tfrecord
from daml_tf.errors import DataError

REPO = pathlib.Path(__file__).resolve().parents[1]
SPEC = registry.get_spec("synthetic")
SIZE = (32, 48)
# Lengths differ so that a mix-up shows; 7 frames is one more than the longest clip span used.
TRAIN_VIDEOS = {"01": 14, "02": 9, "03": 11, "04": 7}
NUM_FRAMES = sum(TRAIN_VIDEOS.values())
# (time_steps, interval, delta): spans 5, 4 and 6.
GEOMETRIES = [(3, 2, 1), (2, 1, 3), (3, 1, 4)]


def _cfg(geometry=(3, 2, 1), cache="memory", size=SIZE, channels=1, **kwargs):
  time_steps, interval, delta = geometry
  return config.DataConfig(image_height=size[0], image_width=size[1], channels=channels,
                           time_steps=time_steps, interval=interval, delta=delta, batch_size=4,
                           frame_cache=cache, seed=5, **kwargs)


def _clips(dataset):
  return np.concatenate([batch.numpy() for batch in dataset], axis=0)


def _sorted(clips):
  """The clips in a canonical order, to compare multisets."""
  flat = clips.reshape(len(clips), -1)
  return clips[np.lexsort(flat.T[::-1])]


@pytest.fixture(scope="module")
def gray(tmp_path_factory):
  """(videos, TFRecord dir with 2 shards of 4-frame records) of a gray PNG dataset."""
  root = write_frames_dataset(str(tmp_path_factory.mktemp("gray") / "data"),
                              videos={"training": TRAIN_VIDEOS}, size=SIZE)
  videos = layout.list_videos(root, "training", SPEC)
  out = str(tmp_path_factory.mktemp("gray") / "tfrecords")
  tfrecord.write_tfrecords(videos, out, "synthetic", SIZE, 1, num_shards=2, frames_per_record=4)
  return videos, out


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
  """(videos, TFRecord dir with 3 shards of whole-video records) of an RGB PNG dataset."""
  root = write_frames_dataset(str(tmp_path_factory.mktemp("rgb") / "data"),
                              videos={"training": TRAIN_VIDEOS}, size=SIZE, rgb=True, seed=1)
  videos = layout.list_videos(root, "training", SPEC)
  out = str(tmp_path_factory.mktemp("rgb") / "tfrecords")
  tfrecord.write_tfrecords(videos, out, "synthetic", SIZE, 3, num_shards=3)
  return videos, out


def _frame_paths(videos):
  return [p for v in videos for p in v.frame_paths]


# ----------------------------------------------------------------------------------------------
# The same clips as the frames pipeline.


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_clips_equal_frames_pipeline(gray, geometry):
  videos, out = gray
  background = tfrecord.load_background(out)
  for cache in ("memory", "none"):
    cfg = _cfg(geometry, cache)
    frames = pipeline.training_dataset(videos, background, cfg, training=False)
    records = tfrecord.training_dataset(out, background, cfg, training=False)
    assert records.num_clips == records.total_clips == frames.num_clips
    assert records.num_clips == sum(n - cfg.clip_span for n in TRAIN_VIDEOS.values())
    assert records.dataset.element_spec.shape.as_list() == [None, geometry[0] + 1, 32, 48, 1]
    expected = _clips(frames.dataset)
    got = _clips(records.dataset)
    assert got.shape == expected.shape and got.dtype == np.float32
    # Bit for bit: 8-bit frames at model resolution survive the uint8 records exactly.
    np.testing.assert_array_equal(_sorted(got), _sorted(expected))


def test_rgb_clips_equal_frames_pipeline(rgb):
  videos, out = rgb
  background = tfrecord.load_background(out)
  for geometry in GEOMETRIES[:2]:
    cfg = _cfg(geometry, channels=3)
    expected = _clips(pipeline.training_dataset(videos, background, cfg, False).dataset)
    got = _clips(tfrecord.training_dataset(out, background, cfg, training=False).dataset)
    np.testing.assert_array_equal(_sorted(got), _sorted(expected))


def test_resized_frames_within_half_a_level(gray, tmp_path):
  videos, _ = gray
  out = str(tmp_path / "small")
  tfrecord.write_tfrecords(videos, out, "synthetic", (16, 24), 1, num_shards=1)
  background = tfrecord.load_background(out)
  cfg = _cfg(size=(16, 24))
  expected = _clips(pipeline.training_dataset(videos, background, cfg, False).dataset)
  got = _clips(tfrecord.training_dataset(out, background, cfg, training=False).dataset)
  assert got.shape == expected.shape
  # training=False keeps both orders fixed; record order is video order with one shard.
  assert np.abs(got - expected).max() <= 0.5 / 255 + 1e-6


def test_background_is_the_frames_pipelines(gray, rgb):
  for (videos, out), channels in ((gray, 1), (rgb, 3)):
    computed = pipeline.compute_background(_frame_paths(videos), SIZE, channels)
    np.testing.assert_array_equal(tfrecord.load_background(out), computed)


# ----------------------------------------------------------------------------------------------
# Index and shards.


def test_index_and_shards(gray):
  videos, out = gray
  index = tfrecord.load_index(out)
  assert (index["dataset"], index["image_height"], index["image_width"], index["channels"]) == (
      "synthetic", 32, 48, 1)
  assert index["num_frames"] == NUM_FRAMES and index["frames_per_record"] == 4
  assert [(v["name"], v["num_frames"]) for v in index["videos"]] == list(TRAIN_VIDEOS.items())
  assert [s["file"] for s in index["shards"]] == [tfrecord.shard_name(i, 2) for i in range(2)]
  assert sorted(n for n in os.listdir(out)) == sorted(
      [tfrecord.INDEX_FILE, tfrecord.BACKGROUND_FILE] + [s["file"] for s in index["shards"]])
  for shard in index["shards"]:
    members = [v for v in index["videos"] if v["shard"] == shard["file"]]
    assert shard["num_videos"] == len(members) > 0
    assert shard["num_frames"] == sum(v["num_frames"] for v in members)
    # Records of at most 4 frames never span two videos.
    assert shard["num_records"] == sum(-(-v["num_frames"] // 4) for v in members)
    records = list(tf.data.TFRecordDataset(os.path.join(out, shard["file"])))
    assert len(records) == shard["num_records"]
  # Balanced: 14 + 7 against 11 + 9 frames.
  assert sorted(s["num_frames"] for s in index["shards"]) == [20, 21]


def test_record_contents(gray):
  videos, out = gray
  index = tfrecord.load_index(out)
  shard = index["videos"][1]["shard"]  # Video "02": records of frames 0-3, 4-7, 8.
  records = []
  for serialized in tf.data.TFRecordDataset(os.path.join(out, shard)):
    example = tf.train.Example.FromString(serialized.numpy())
    features = {k: v for k, v in example.features.feature.items()}
    if features["video"].bytes_list.value[0] == b"02":
      records.append(features)
  assert [f["first_frame"].int64_list.value[0] for f in records] == [0, 4, 8]
  assert [f["num_frames"].int64_list.value[0] for f in records] == [4, 4, 1]
  last = records[-1]
  frame = np.frombuffer(last["frames"].bytes_list.value[0], np.uint8).reshape(1, 32, 48, 1)
  decoded = pipeline.decode_frames(videos[1].frame_paths[8:], SIZE, 1)
  np.testing.assert_array_equal(frame, np.rint(decoded * 255))


def test_assign_shards_balances_whole_videos():
  counts = [100, 10, 40, 60, 30, 5]
  shards = tfrecord.assign_shards(counts, 3)
  assert sorted(v for s in shards for v in s) == list(range(6))
  loads = sorted(sum(counts[v] for v in s) for s in shards)
  assert loads == [70, 75, 100]
  assert tfrecord.assign_shards([3, 3], 2) == [[0], [1]]


def test_convert_defaults_to_one_shard_per_video(gray, tmp_path):
  videos, _ = gray
  root = str(pathlib.Path(videos[0].frame_paths[0]).parents[3])
  index = tfrecord.convert("synthetic", root, str(tmp_path / "tfr"), image_height=32,
                           image_width=48)
  assert len(index["shards"]) == len(TRAIN_VIDEOS) and index["source"] == root
  assert all(s["num_videos"] == 1 for s in index["shards"])
  with pytest.raises(DataError, match="channels 1 or 3"):
    tfrecord.convert("synthetic", root, str(tmp_path / "x"), channels=2)


def test_exit_process_without_s3():
  assert cli.exit_process(0) is None
  with pytest.raises(SystemExit) as exit_:
    cli.exit_process(3)
  assert exit_.value.code == 3


# ----------------------------------------------------------------------------------------------
# Several input pipelines.


def _context(pipelines, pipeline_id, replicas):
  return tf.distribute.InputContext(num_input_pipelines=pipelines,
                                    input_pipeline_id=pipeline_id,
                                    num_replicas_in_sync=replicas)


def _as_set(clips):
  return {clip.tobytes() for clip in clips}


def test_sharding_by_file_gives_disjoint_halves(gray):
  videos, out = gray
  background = tfrecord.load_background(out)
  cfg = _cfg()
  everything = _clips(tfrecord.training_dataset(out, background, cfg, training=False).dataset)
  halves = []
  for pipeline_id in range(2):
    data = tfrecord.training_dataset(out, background, cfg, training=False,
                                     input_context=_context(2, pipeline_id, 2))
    assert data.batch_size == 2 and data.global_batch_size == 4
    assert data.total_clips == len(everything)
    clips = _clips(data.dataset)
    assert len(clips) == data.num_clips
    halves.append(clips)
    # Lock-step training: every pipeline counts the same global steps.
    assert data.steps_per_epoch() == len(everything) // 4
  assert len(halves[0]) + len(halves[1]) == len(everything)
  assert not _as_set(halves[0]) & _as_set(halves[1])
  np.testing.assert_array_equal(_sorted(np.concatenate(halves)), _sorted(everything))
  # A shard file is never split, so each half holds whole videos.
  with pytest.raises(DataError, match="fewer than the 3 input pipelines"):
    tfrecord.training_dataset(out, background, cfg, input_context=_context(3, 0, 4))
  with pytest.raises(DataError, match="cannot be split evenly over 3 replicas"):
    tfrecord.training_dataset(out, background, cfg, input_context=_context(1, 0, 3))


# ----------------------------------------------------------------------------------------------
# Training mode.


def test_training_mode_shuffles_repeats_and_is_seeded(gray):
  videos, out = gray
  background = tfrecord.load_background(out)
  for cache in ("memory", "none"):
    cfg = _cfg(cache=cache)
    ordered = _clips(tfrecord.training_dataset(out, background, cfg, training=False).dataset)
    data = tfrecord.training_dataset(out, background, cfg, training=True)
    assert data.dataset.element_spec.shape.as_list() == [4, 4, 32, 48, 1]
    assert data.steps_per_epoch() == len(ordered) // 4
    # Three passes' worth: the dataset repeats.
    batches = [b.numpy() for b in data.dataset.take(3 * len(ordered) // 4)]
    drawn = np.concatenate(batches)
    assert _as_set(drawn) == _as_set(ordered)
    assert not np.array_equal(drawn[:len(ordered)], ordered)
    again = tfrecord.training_dataset(out, background, cfg, training=True)
    np.testing.assert_array_equal(next(iter(again.dataset)).numpy(), batches[0])


# ----------------------------------------------------------------------------------------------
# Errors.


def test_index_mismatch_is_named(gray):
  _, out = gray
  background = tfrecord.load_background(out)
  index = tfrecord.load_index(out)
  tfrecord.check_index(index, _cfg())
  for cfg, message in [
      (_cfg(dataset="ped2"), "dataset 'synthetic' \\(wanted 'ped2'\\)"),
      (_cfg(size=(32, 64)), "image_width 48 \\(wanted 64\\)"),
      (_cfg(channels=3), "channels 1 \\(wanted 3\\)"),
  ]:
    with pytest.raises(DataError, match=message):
      tfrecord.check_index(index, cfg)
    with pytest.raises(DataError, match=message):
      tfrecord.training_dataset(out, background, cfg)


def test_missing_or_broken_directories(gray, tmp_path):
  _, out = gray
  with pytest.raises(DataError, match="No TFRecord index .*daml_tf.data.to_tfrecord"):
    tfrecord.load_index(str(tmp_path))
  with pytest.raises(DataError, match="No TFRecord index"):
    tfrecord.load_background(str(tmp_path / "absent"))
  (tmp_path / tfrecord.INDEX_FILE).write_text("{not json")
  with pytest.raises(DataError, match="Cannot read the TFRecord index"):
    tfrecord.load_index(str(tmp_path))
  (tmp_path / tfrecord.INDEX_FILE).write_text(json.dumps({"format": "other"}))
  with pytest.raises(DataError, match="not a daml_tf TFRecord index"):
    tfrecord.load_index(str(tmp_path))
  # A shard gone missing, and a geometry no video is long enough for.
  broken = tmp_path / "broken"
  broken.mkdir()
  for name in os.listdir(out):
    if not name.startswith("train-00001"):
      (broken / name).write_bytes((pathlib.Path(out) / name).read_bytes())
  background = tfrecord.load_background(str(broken))
  with pytest.raises(DataError, match="train-00001-of-00002.tfrecord.* is missing"):
    tfrecord.training_dataset(str(broken), background, _cfg())
  with pytest.raises(DataError, match=r"04 \(7 frames\)"):
    tfrecord.training_dataset(out, background, _cfg((4, 2, 1)))


def test_refuses_to_overwrite_then_replaces(gray, tmp_path):
  videos, _ = gray
  out = str(tmp_path / "tfr")
  tfrecord.write_tfrecords(videos, out, "synthetic", SIZE, 1, num_shards=3)
  with pytest.raises(DataError, match="already holds a TFRecord conversion.*--overwrite"):
    tfrecord.write_tfrecords(videos, out, "synthetic", SIZE, 1, num_shards=2)
  (tmp_path / "tfr" / "notes.txt").write_text("kept")
  tfrecord.write_tfrecords(videos, out, "synthetic", SIZE, 1, num_shards=2, overwrite=True)
  # The three old shards are gone, other files are kept.
  assert sorted(os.listdir(out)) == sorted(
      [tfrecord.INDEX_FILE, tfrecord.BACKGROUND_FILE, "notes.txt",
       tfrecord.shard_name(0, 2), tfrecord.shard_name(1, 2)])
  with pytest.raises(DataError, match=r"--shards must be between 1 and .* videos \(4;"):
    tfrecord.write_tfrecords(videos, out, "synthetic", SIZE, 1, num_shards=5, overwrite=True)


def test_failed_conversion_leaves_no_index_or_temporaries(tmp_path):
  root = write_frames_dataset(str(tmp_path / "data"), videos={"training": {"01": 8, "02": 8}},
                              size=SIZE)
  bad = os.path.join(root, "training", "frames", "02", "003.png")
  with open(bad, "w") as f:
    f.write("not an image\n")
  videos = layout.list_videos(root, "training", SPEC)
  out = str(tmp_path / "tfr")
  with pytest.raises(DataError, match="003.png"):
    tfrecord.write_tfrecords(videos, out, "synthetic", SIZE, 1, num_shards=2)
  assert os.listdir(out) == []


# ----------------------------------------------------------------------------------------------
# Command line.


def _run(*args):
  return subprocess.run([sys.executable, "-m", "daml_tf.data.to_tfrecord", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120, check=False)


def test_command_line(tmp_path):
  root = write_frames_dataset(str(tmp_path / "data"), videos={"training": TRAIN_VIDEOS},
                              size=SIZE)
  out = tmp_path / "tfr"
  args = ("--dataset=synthetic", f"--data_dir={root}", f"--output_dir={out}", "--shards=2")
  result = _run(*args)
  assert result.returncode == 0, result.stderr[-3000:]
  index = json.loads((out / tfrecord.INDEX_FILE).read_text())
  # Image size and channels default to the registry's: 64x96 gray for "synthetic".
  assert (index["image_height"], index["image_width"], index["channels"]) == (64, 96, 1)
  assert len(index["shards"]) == 2 and index["num_frames"] == NUM_FRAMES
  assert all((out / s["file"]).is_file() for s in index["shards"])
  assert np.load(out / tfrecord.BACKGROUND_FILE).shape == (64, 96, 1)

  for args, message in [
      (args, "already holds a TFRecord conversion"),
      (("--dataset=synthetic", f"--data_dir={tmp_path / 'missing'}",
        f"--output_dir={tmp_path / 'x'}"), "does not exist or is not a folder"),
  ]:
    result = _run(*args)
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("E")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_training_reads_the_tfrecords(tmp_path):
  """--tfrecord_dir end to end: convert, train a few steps from the shards, restore."""
  from daml_tf import run_dir
  from daml_tf import train as train_command
  from daml_tf.data import synthetic
  data_dir = str(tmp_path / "frames")
  synthetic.generate(data_dir, num_train_videos=2, num_test_videos=1, frames_per_video=24)
  records = str(tmp_path / "records")
  tfrecord.convert("synthetic", data_dir, records, num_shards=2, image_height=32,
                   image_width=48, channels=1)
  cfg = testing.tiny_config(data_dir, tmp_path / "model",
                            data=dict(tfrecord_dir=records, clips_per_epoch=6), train_epochs=1,
                            finetune_epochs=1, image_summary_steps=0, export=False,
                            calibration_holdout=0)
  trained = train_command.run(cfg)
  assert trained.metrics["global_step"] == 6
  model = run_dir.restore_model(cfg)
  np.testing.assert_array_equal(model.background.numpy(), tfrecord.load_background(records))
  # No frames-layout videos to calibrate on: training says so instead of writing a threshold.
  assert not (tmp_path / "model" / "threshold.json").exists()
