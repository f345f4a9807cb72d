"""Benchmark: analytic MAC counts against hand arithmetic, and a tiny timed run."""

import json

import keras

import testing
from daml_tf import benchmark
from daml_tf.models.encoder import AppearanceEncoder
from daml_tf.models.motion import MotionModel


def test_count_macs_encoder_by_hand():
  encoder = AppearanceEncoder(image_size=(8, 8), channels=1, levels=2, feature_root=2)
  # Level 0 at 8x8, 2 channels: conv1 1->2, conv2 2->2, both 3x3.
  level0 = 8 * 8 * 3 * 3 * 1 * 2 + 8 * 8 * 3 * 3 * 2 * 2  # 1152 + 2304
  # Max-pool to 4x4; level 1 has 4 channels: conv1 2->4, conv2 4->4.
  level1 = 4 * 4 * 3 * 3 * 2 * 4 + 4 * 4 * 3 * 3 * 4 * 4  # 1152 + 2304
  assert benchmark.count_macs(encoder) == level0 + level1 == 6912


def test_count_macs_motion_by_hand():
  motion = MotionModel(time_steps=4, latent_shape=(2, 2, 4))
  # Three 3x3x3 Conv3D 4->4 with stride (2, 1, 1), 'same': time 4 -> 2 -> 1 -> 1 over 2x2.
  kernel = 3 * 3 * 3 * 4 * 4  # 432
  expected = (2 * 2 * 2 * kernel) + (1 * 2 * 2 * kernel) + (1 * 2 * 2 * kernel)
  assert benchmark.count_macs(motion) == expected == 6912


def test_count_macs_strided_and_transposed():
  inputs = keras.Input((5, 5, 3))
  x = keras.layers.Conv2D(4, 3, strides=2, padding="valid")(inputs)  # -> 2x2x4
  x = keras.layers.Conv2DTranspose(6, 2, strides=2)(x)  # -> 4x4x6
  x = keras.layers.Dense(7)(x)  # -> 4x4x7
  model = keras.Model(inputs, x)
  conv = 2 * 2 * 3 * 3 * 3 * 4  # 432
  transposed = 4 * 4 * 2 * 2 * 4 * 6  # 1536, counted on the output
  dense = 4 * 4 * 6 * 7  # 672
  assert benchmark.count_macs(model) == conv + transposed + dense


def test_run_benchmark_tiny():
  cfg = testing.tiny_config(data=dict(time_steps=4))
  result = benchmark.run_benchmark(cfg, runs=3, warmup=1)
  result = json.loads(json.dumps(result))  # Must survive JSON unchanged in structure.
  assert set(result) >= {"machine", "model", "runs", "warmup", "gmac_per_frame", "results"}
  assert set(result["machine"]) >= {"processor", "cpu_count", "intra_op_threads",
                                    "tensorflow_version"}
  assert result["model"]["latent_shape"] == [16, 24, 8]
  gmac = result["gmac_per_frame"]
  assert 0 < gmac["decoupled"] < gmac["coupled"]
  assert [entry["batch_size"] for entry in result["results"]] == [1, 8]
  for entry in result["results"]:
    for mode in benchmark.MODES:
      numbers = entry[mode]
      assert numbers["frames_per_second"] > 0
      assert numbers["ms_per_frame"] > 0 and numbers["gflops_per_second"] > 0
    assert entry["speedup"] > 0
  assert "decoupled" in benchmark.format_table(result)


def test_runtime_benchmark_tiny_with_video(tmp_path):
  """Every runtime is timed through its streaming backend, and end to end on a video file."""
  import numpy as np
  from daml_tf.data import video_io
  video = str(tmp_path / "clip.avi")
  rng = np.random.default_rng(0)
  with video_io.VideoWriter(video, fps=25) as writer:
    for _ in range(12):
      writer.write(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
  cfg = testing.tiny_config()
  result = benchmark.run_runtime_benchmark(
      cfg, ["keras", "saved_model", "litert_float32", "litert_float16"], runs=2, warmup=1,
      threads=1, video=video, max_video_frames=10)
  result = json.loads(json.dumps(result))
  assert list(result["runtimes"]) == ["keras", "saved_model", "litert_float32", "litert_float16"]
  for entry in result["runtimes"].values():
    assert entry["decoupled"]["ms_per_frame"] > 0 and entry["coupled"]["ms_per_frame"] > 0
  video_result = result["end_to_end"]
  assert video_result["frames"] == 10 and video_result["frame_shape"] == [40, 60, 3]
  for entry in video_result["runtimes"].values():
    # 10 frames, the first clip_span = 3 only fill the buffer (untimed); the 7 others are scored.
    assert entry["scored_frames"] == video_result["timed_frames"] == 7
    assert entry["frames_per_second"] > 0
  table = benchmark.format_table(dict(benchmark.run_benchmark(cfg, runs=1, warmup=0,
                                                              batch_sizes=[1]), **result))
  assert "litert_float16" in table and "End to end" in table


def test_unknown_runtime_is_refused():
  import pytest
  cfg = testing.tiny_config()
  with pytest.raises(ValueError, match="Unknown runtime"):
    benchmark.run_runtime_benchmark(cfg, ["onnx"], runs=1, warmup=0, threads=1)


def test_streams_benchmark_on_a_trained_run(tmp_path):
  """Several streams per runtime, batched and separate, on a run's own model."""
  import pytest
  model_dir = str(tmp_path / "run")
  cfg, _ = testing.make_run(model_dir, {"threshold": 0.1, "quantile": 0.9})
  result = benchmark.run_runtime_benchmark(cfg, ["keras"], runs=2, warmup=1, threads=1,
                                           streams=[1, 3], trained_model_dir=model_dir)
  result = json.loads(json.dumps(result))
  assert result["weights"] == model_dir
  entries = result["streams"]["keras"]
  assert [entry["streams"] for entry in entries] == [1, 3]
  for entry in entries:
    for mode in ("batched", "separate"):
      numbers = entry[mode]
      assert numbers["total_frames_per_second"] == pytest.approx(
          entry["streams"] * numbers["per_stream_frames_per_second"])
      assert numbers["median_seconds"] > 0
    assert entry["speedup"] > 0
  table = benchmark.format_table(dict(benchmark.run_benchmark(cfg, runs=1, warmup=0,
                                                              batch_sizes=[1]), **result))
  assert "Streams" in table and "bat/sep" in table
  # The run has no LiteRT export to time, and another geometry is refused.
  with pytest.raises(ValueError, match="no litert export"):
    benchmark.run_runtime_benchmark(cfg, ["litert_float32"], runs=1, warmup=0, threads=1,
                                    trained_model_dir=model_dir)
  other = testing.tiny_config(data=dict(interval=2, time_steps=4))
  with pytest.raises(ValueError, match="geometry"):
    benchmark.run_runtime_benchmark(other, ["keras"], runs=1, warmup=0, threads=1,
                                    trained_model_dir=model_dir)
