"""Inference cost of decoupled (streaming) vs coupled scoring, per new frame.

`python -m daml_tf.benchmark --flagfile=configs/<x>.cfg [--output=bench.json] [--runs=50]
[--warmup=5] [--threads=2] [--runtimes=keras,saved_model,litert_float32,litert_float16]
[--video=<file>]`

DAML's point is that appearance and motion are decoupled: a streaming scorer encodes each new
frame once, keeps the last k latent codes, and runs only the small motion model on them. A
coupled model has to look at the whole clip again for every scored frame, i.e. encode k+1
frames. This module times both on the model geometry of a config (untrained weights: the cost
does not depend on their values), counts their multiply-adds analytically and reports frames/s,
ms/frame, GMAC/frame and achieved GFLOP/s for a single camera (batch 1) and for several streams
scored together (batch 8).

The same two paths are then timed per runtime at batch 1, through the streaming detector's
backends: Keras/TF, the serving SavedModel's `encode` + `predict_latent` signatures, and the
LiteRT flatbuffers (float32 and float16 weights). These include what a deployment pays per
frame (uint8 -> float preprocessing, a signature or interpreter call per network), so they are
the numbers a camera sees. With --video, each runtime also runs the full streaming detector on a
real video file: PyAV decoding, resize and colour conversion, encoder, motion model, score.

With --streams=1,4,8, each runtime also scores that many camera streams at once, one new frame
per stream per step (`multistream.MultiStreamDetector`: one encoder call and one motion-model
call per step), against as many separate streaming detectors called one after the other; the
table gives total and per-stream frames/s. --trained_model_dir times a training run's own
model and exports (e.g. pretrained/ped2_cpu) instead of an untrained model of the config.
"""

import json
import os
import platform
import statistics
import tempfile
import time
from typing import Dict, Iterable, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging
import keras
import numpy as np
import tensorflow as tf

from daml_tf import fileio
from daml_tf import cli
from daml_tf import cli_flags
from daml_tf import config as config_lib
from daml_tf import run_dir
from daml_tf.data import motion_maps
from daml_tf.data import video_io
from daml_tf.inference import backends
from daml_tf.inference import multistream
from daml_tf.inference import serving
from daml_tf.inference import streaming
from daml_tf.models import build
from daml_tf.models import scores
from daml_tf.models.daml import map_frames

MODES = ("decoupled", "coupled")


def runtime_variants() -> Dict[str, Tuple[backends.Runtime, str]]:
  """{benchmark name: (runtime, precision)} of every registered runtime and precision.

  A runtime with one precision is named as registered ("keras"), one with several gets a row
  per precision ("litert_float32", "litert_float16").
  """
  variants = {}
  for runtime in backends.RUNTIMES.values():
    for precision in runtime.precisions:
      name = runtime.name if len(runtime.precisions) == 1 else f"{runtime.name}_{precision}"
      variants[name] = (runtime, precision)
  return variants


def _conv_macs(layer) -> int:
  """Multiply-adds of one example through a convolution: output positions x kernel size.

  For Conv2D/Conv3D the kernel is (spatial..., cin, cout), so output positions times the kernel's
  element count is exactly H_out*W_out*kh*kw*cin*cout (T_out*... for Conv3D). Conv2DTranspose
  stores (kh, kw, cout, cin); the same product is counted on its (larger) output.
  """
  output_positions = int(np.prod([int(d) for d in layer.output.shape[1:-1]]))
  kernel_size = int(np.prod([int(d) for d in layer.kernel.shape]))
  groups = getattr(layer, "groups", 1) or 1
  # A grouped convolution connects each output channel to cin / groups inputs only.
  return output_positions * kernel_size // groups


def count_macs(keras_model: keras.Model) -> int:
  """Multiply-adds of one example through a built functional Keras model.

  Counts Conv2D, Conv2DTranspose, Conv3D (see `_conv_macs`) and Dense layers, descending into
  nested models. BatchNorm, activations and pooling are not multiply-adds and are left out,
  as is usual for MAC counts; at inference BatchNorm folds into the convolution anyway.

  Args:
    keras_model: a model whose layers have static output shapes (a functional model).

  Returns:
    The MAC count for a batch of one.
  """
  total = 0
  for layer in keras_model.layers:
    if isinstance(layer, keras.Model):
      total += count_macs(layer)
    elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose,
                            keras.layers.Conv3D)):
      total += _conv_macs(layer)
    elif isinstance(layer, keras.layers.Dense):
      # Every leading axis except the batch repeats the (cin x cout) product.
      leading = int(np.prod([int(d) for d in layer.output.shape[1:-1]]))
      total += leading * int(np.prod([int(d) for d in layer.kernel.shape]))
  return total


def _make_steps(model):
  """The two scorers as tf.functions, each returning the anomaly scores of the new frames.

  Both run the encoder and the motion model inside one graph, so the timing compares the
  models' work rather than Python dispatch.
  """
  k = model.time_steps

  @tf.function
  def decoupled(frame, cache):
    # frame: [B, H, W, C], the newest frame; cache: [B, k, h, w, c], the codes already seen.
    code = model.code_of(model.encoder(frame, training=False))
    predicted = model.motion(cache, training=False)
    score = scores.latent_error(predicted, code)
    # Rolling the cache is part of the per-frame work of a real stream.
    new_cache = tf.concat([cache[:, 1:], code[:, tf.newaxis]], axis=1)
    return score, new_cache

  @tf.function
  def coupled(clip):
    # clip: [B, k+1, H, W, C]; every frame is encoded again for every scored frame.
    codes = map_frames(lambda frames: model.code_of(model.encoder(frames, training=False)), clip)
    predicted = model.motion(codes[:, :k], training=False)
    return scores.latent_error(predicted, codes[:, k])

  return decoupled, coupled


def _median_seconds(call, runs: int, warmup: int) -> float:
  """Median wall time of `call()` over `runs` calls after `warmup` untimed ones."""
  for _ in range(warmup):
    call()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def machine_info() -> Dict[str, object]:
  """What the numbers were measured on."""
  return {
      "processor": platform.processor(),
      "machine": platform.machine(),
      "platform": platform.platform(),
      "cpu_count": os.cpu_count(),
      "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
      "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
      "tensorflow_version": tf.__version__,
      "keras_version": keras.__version__,
  }


def run_benchmark(cfg: config_lib.Config, runs: int, warmup: int,
                  batch_sizes: Iterable[int] = (1, 8)) -> Dict[str, object]:
  """Times decoupled and coupled scoring of the config's model geometry in float32.

  The config's mixed-precision policy is ignored (and the global policy restored afterwards):
  float16 is slow on CPUs, and a float32 result is comparable across machines.

  Args:
    cfg: the config; only its data geometry and model section are used.
    runs: timed calls per (mode, batch size); the median is reported.
    warmup: untimed calls before them (the first one traces the tf.function).
    batch_sizes: streams scored together.

  Returns:
    A JSON-serialisable dict with keys
      machine: `machine_info()` (processor, cpu_count, thread counts, versions).
      model: image_size, channels, time_steps, levels, feature_root, latent_shape,
        encoder_parameters, motion_parameters, encoder_gmac_per_frame, motion_gmac.
      runs, warmup: as given.
      gmac_per_frame: {decoupled, coupled} -- encoder + motion vs (k+1) encoders + motion.
      results: one entry per batch size: {batch_size, decoupled: {...}, coupled: {...},
        speedup}, each mode holding median_seconds (per batch), frames_per_second,
        ms_per_frame and gflops_per_second (2 * MACs * frames/s / 1e9); speedup is decoupled
        frames/s over coupled frames/s.
  """
  model = build.float32_model(cfg)
  k = cfg.data.time_steps
  height, width = cfg.data.image_size
  channels = cfg.data.channels
  latent_shape = tuple(int(d) for d in model.latent_shape)
  code_shape = tuple(int(d) for d in model.code_shape)
  encoder_macs = count_macs(model.encoder)
  motion_macs = count_macs(model.motion)
  macs = {"decoupled": encoder_macs + motion_macs, "coupled": (k + 1) * encoder_macs + motion_macs}
  decoupled, coupled = _make_steps(model)
  rng = np.random.default_rng(0)

  results = []
  for batch in batch_sizes:
    frame = tf.constant(rng.standard_normal((batch, height, width, channels), np.float32))
    cache = tf.constant(rng.standard_normal((batch, k) + code_shape, np.float32))
    clip = tf.constant(rng.standard_normal((batch, k + 1, height, width, channels), np.float32))
    calls = {
        # .numpy() waits for the result, so a call is timed to its end on any device.
        "decoupled": lambda: decoupled(frame, cache)[0].numpy(),
        "coupled": lambda: coupled(clip).numpy(),
    }
    entry = {"batch_size": int(batch)}
    for mode in MODES:
      seconds = _median_seconds(calls[mode], runs, warmup)
      fps = batch / seconds
      entry[mode] = {
          "median_seconds": seconds,
          "frames_per_second": fps,
          "ms_per_frame": 1000.0 / fps,
          "gflops_per_second": 2.0 * macs[mode] * fps / 1e9,
      }
    entry["speedup"] = (entry["decoupled"]["frames_per_second"] /
                        entry["coupled"]["frames_per_second"])
    results.append(entry)

  return {
      "machine": machine_info(),
      "model": {
          "image_size": [height, width],
          "channels": channels,
          "time_steps": k,
          "levels": cfg.model.levels,
          "feature_root": cfg.model.feature_root,
          "motion_bottleneck": cfg.model.motion_bottleneck,
          "latent_shape": list(latent_shape),
          "code_shape": list(code_shape),
          "encoder_parameters": int(model.encoder.count_params()),
          "motion_parameters": int(model.motion.count_params()),
          "encoder_gmac_per_frame": encoder_macs / 1e9,
          "motion_gmac": motion_macs / 1e9,
      },
      "runs": int(runs),
      "warmup": int(warmup),
      "gmac_per_frame": {mode: macs[mode] / 1e9 for mode in MODES},
      "results": results,
  }


def trained_model_paths(model_dir: str) -> Dict[str, str]:
  """{runtime name: directory} of a training run: the run itself (keras) and the highest
  version of its serving export (saved_model) and of its LiteRT export (litert), if any."""
  export_base = run_dir.export_dir(model_dir)
  paths = {backends.KerasRuntime.name: model_dir}
  for name, base in ((backends.SavedModelRuntime.name, export_base),
                     (backends.LiteRTRuntime.name, os.path.join(export_base,
                                                                run_dir.LITERT_SUBDIR))):
    versions = serving.version_numbers(base)
    if versions:
      paths[name] = serving.version_dir(base, versions[0])
  return paths


def make_backends(model, cfg: config_lib.Config, runtimes: Sequence[str], work_dir: str,
                  threads: int, trained_model_dir: str = "") -> Dict[str, "backends.Backend"]:
  """The streaming backends of `runtimes` for one model, each written as its runtime opens it,
  or opened from `trained_model_dir` (a training run and its exports) when given.

  Raises:
    ValueError: an unknown runtime name, or one trained_model_dir has no export for.
    errors.ExportError: the LiteRT conversion failed (its message says why).
  """
  variants = runtime_variants()
  unknown = set(runtimes) - set(variants)
  if unknown:
    raise ValueError(f"Unknown runtime(s) {sorted(unknown)}; choose from {tuple(variants)}.")
  trained = trained_model_paths(trained_model_dir) if trained_model_dir else {}
  opened = {}
  for name in runtimes:
    runtime, precision = variants[name]
    if trained_model_dir and runtime.name not in trained:
      raise ValueError(f"{trained_model_dir} has no {runtime.name} export to time; export it "
                       "(python -m daml_tf.export) or leave --runtimes without it.")
    path = trained[runtime.name] if trained else runtime.write(model, cfg, work_dir)
    opened[name] = runtime.open(path, precision, num_threads=threads).backend
    streaming.check_geometry(opened[name], cfg.data)
  return opened


def time_backend(backend, cfg: config_lib.Config, runs: int, warmup: int,
                 macs: Dict[str, int]) -> Dict[str, object]:
  """Decoupled and coupled per-frame cost of one backend at batch 1 (a live camera).

  Frames are uint8 at model resolution, as a decoder at that size would deliver them; the
  score and error map come from the streaming detector's scores.host_scorer and the code cache
  is NumPy, as in the detector.
  """
  k = cfg.data.time_steps
  height, width = cfg.data.image_size
  rng = np.random.default_rng(0)
  clip = rng.integers(0, 256, (k + 1, height, width, cfg.data.channels), dtype=np.uint8)
  cache = backend.encode(clip[0])[:, np.newaxis].repeat(k, axis=1)
  score_and_map = scores.host_scorer(scores.DEFAULT_SCORE)

  def decoupled():
    nonlocal cache
    code = backend.encode(clip[k])
    predicted = backend.predict(cache)
    score, _ = score_and_map(predicted, code)
    cache = np.concatenate([cache[:, 1:], code[:, np.newaxis]], axis=1)
    return score

  def coupled():
    codes = np.stack([backend.encode(frame)[0] for frame in clip])[np.newaxis]
    return score_and_map(backend.predict(codes[:, :k]), codes[:, k])[0]

  entry = {}
  for mode, call in (("decoupled", decoupled), ("coupled", coupled)):
    seconds = _median_seconds(call, runs, warmup)
    entry[mode] = {
        "median_seconds": seconds,
        "frames_per_second": 1.0 / seconds,
        "ms_per_frame": 1000.0 * seconds,
        "gflops_per_second": 2.0 * macs[mode] / seconds / 1e9,
    }
  entry["speedup"] = entry["decoupled"]["frames_per_second"] / entry["coupled"][
      "frames_per_second"]
  return entry


def _time_detector(detector: streaming.StreamingDetector, frames, warm: int
                   ) -> Tuple[Dict[str, object], Tuple[int, ...]]:
  """Steady-state frames/s of one detector over `frames()` (the first `warm` frames fill its
  buffer untimed), and the shape of its error maps."""
  stream = frames()
  for _ in range(warm):
    detector.process(next(stream))
  scored, shape = 0, ()
  start = time.perf_counter()
  for frame in stream:
    result = detector.process(frame)
    if result.score is not None:
      scored += 1
      shape = result.error_map.shape
  seconds = time.perf_counter() - start
  return {"frames_per_second": scored / seconds, "ms_per_frame": 1000.0 * seconds / scored,
          "scored_frames": int(scored)}, shape


def time_video(backends: Dict[str, object], cfg: config_lib.Config, video: str,
               max_frames: int, flow_scales: Sequence[float] = ()) -> Dict[str, object]:
  """End-to-end streaming detection on a video file, per runtime, plus decoding alone.

  The file is decoded anew for each runtime, as a camera feed would be. The first
  `interval*(k-1)+delta` frames only fill the code buffer (no motion model runs for them), so
  they are processed before the clock starts: the figure is the steady-state cost of a scored
  frame, decoding included.

  With `flow_scales`, the same again with the motion_weighted score and its optical flow at
  each fraction of the video's resolution (its normalisation fitted on the first 50 frames:
  the cost does not depend on it), and the flow alone per frame (decoding included).
  """
  def frames():
    for index, _, frame in video_io.iter_frames(video):
      if index >= max_frames:
        return
      yield frame

  start = time.perf_counter()
  count = sum(1 for _ in frames())
  decode_seconds = time.perf_counter() - start
  warm = cfg.data.clip_span
  if count <= warm:
    raise ValueError(f"{video} has {count} frames (at most --video_frames={max_frames}); the "
                     f"timing needs more than the {warm} that fill the code buffer.")
  shape = next(frames()).shape
  result = {"video": video, "frames": count, "timed_frames": count - warm,
            "frame_shape": list(shape),
            "decode_only_frames_per_second": count / decode_seconds, "runtimes": {}}
  grid = ()
  for name, backend in backends.items():
    result["runtimes"][name], grid = _time_detector(
        streaming.StreamingDetector(backend, cfg.data), frames, warm)
  if flow_scales:
    sample = [frame for _, frame in zip(range(50), frames())]
    result["motion_weighted"] = {}
    for scale in flow_scales:
      norm = motion_maps.fit_norm([motion_maps.video_speed(sample, grid, scale)], scale)
      tracker = motion_maps.MotionTracker(norm)
      flows = 0
      start = time.perf_counter()
      for frame in frames():
        tracker.update(frame)
        flows += 1
      flow_seconds = time.perf_counter() - start
      entry = {"flow_shape": list(motion_maps.flow_input(sample[0], scale).shape),
               "flow_only_ms_per_frame": 1000.0 * flow_seconds / flows, "runtimes": {}}
      for name, backend in backends.items():
        detector = streaming.StreamingDetector(backend, cfg.data, score="motion_weighted",
                                               motion_norm=norm)
        entry["runtimes"][name], _ = _time_detector(detector, frames, warm)
        detector.close()
      result["motion_weighted"][f"{scale:g}"] = entry
  return result


def time_streams(backend, cfg: config_lib.Config, streams: Iterable[int], runs: int,
                 warmup: int) -> list:
  """Several camera streams on one backend: one multi-stream step vs separate detectors.

  Each stream gets a new uint8 frame at model resolution per step (random pixels: the cost
  does not depend on them), its code buffer already full, so every step encodes and scores
  every stream. "batched" is one MultiStreamDetector.step over all streams (one encoder call,
  one motion-model call); "separate" is one StreamingDetector per stream, called in turn. The
  two modes are timed alternately, `runs` steps each after `warmup`; medians are reported.

  Returns:
    One entry per stream count: {streams, batched: {...}, separate: {...}, speedup}, each
    mode holding median_seconds (per step, all streams), total_frames_per_second and
    per_stream_frames_per_second; speedup is batched over separate total frames/s.
  """
  height, width = cfg.data.image_size
  rng = np.random.default_rng(0)
  # A few distinct frames per stream, taken in turn.
  pool = rng.integers(0, 256, (4, max(streams), height, width, cfg.data.channels),
                      dtype=np.uint8)
  entries = []
  for count in streams:
    names = [f"camera{i}" for i in range(count)]
    batched = multistream.MultiStreamDetector(backend, cfg.data, names)
    separate = [streaming.StreamingDetector(backend, cfg.data) for _ in names]
    step = 0

    def frames():
      nonlocal step
      step += 1
      return pool[step % len(pool), :count]

    def call_batched():
      batched.step(dict(zip(names, frames())))

    def call_separate():
      for detector, frame in zip(separate, frames()):
        detector.process(frame)

    calls = {"batched": call_batched, "separate": call_separate}
    for call in calls.values():
      for _ in range(cfg.data.clip_span + warmup):
        call()  # Fills the code buffers (every timed step scores every stream), then warms up.
    # Alternated, so that a burst of other load on a shared machine hits both modes alike.
    times = {mode: [] for mode in calls}
    for _ in range(runs):
      for mode, call in calls.items():
        start = time.perf_counter()
        call()
        times[mode].append(time.perf_counter() - start)
    entry = {"streams": int(count)}
    for mode in calls:
      seconds = statistics.median(times[mode])
      entry[mode] = {"median_seconds": seconds,
                     "total_frames_per_second": count / seconds,
                     "per_stream_frames_per_second": 1.0 / seconds}
    entry["speedup"] = (entry["batched"]["total_frames_per_second"] /
                        entry["separate"]["total_frames_per_second"])
    entries.append(entry)
  return entries


def run_runtime_benchmark(cfg: config_lib.Config, runtimes: Sequence[str], runs: int,
                          warmup: int, threads: int, video: str = "",
                          max_video_frames: int = 300, streams: Sequence[int] = (),
                          trained_model_dir: str = "", flow_scales: Sequence[float] = ()
                          ) -> Dict[str, object]:
  """Batch-1 decoupled/coupled timing per runtime, with `video` end-to-end frames/s, with
  `streams` the multi-stream timing (time_streams); on `trained_model_dir` if given."""
  model = build.float32_model(cfg)
  k = cfg.data.time_steps
  encoder_macs, motion_macs = count_macs(model.encoder), count_macs(model.motion)
  macs = {"decoupled": encoder_macs + motion_macs, "coupled": (k + 1) * encoder_macs + motion_macs}
  with tempfile.TemporaryDirectory(prefix="daml_bench_") as work_dir:
    backends = make_backends(model, cfg, runtimes, work_dir, threads, trained_model_dir)
    result = {"runtimes": {}, "weights": trained_model_dir or "untrained"}
    for name, backend in backends.items():
      result["runtimes"][name] = time_backend(backend, cfg, runs, warmup, macs)
      logging.info("%s: decoupled %.2f ms/frame, coupled %.2f ms/frame", name,
                   result["runtimes"][name]["decoupled"]["ms_per_frame"],
                   result["runtimes"][name]["coupled"]["ms_per_frame"])
    if streams:
      result["streams"] = {name: time_streams(backend, cfg, streams, runs, warmup)
                           for name, backend in backends.items()}
    if video:
      result["end_to_end"] = time_video(backends, cfg, video, max_video_frames, flow_scales)
  return result


def format_table(result: Dict[str, object]) -> str:
  """The benchmark as a fixed-width text table."""
  model = result["model"]
  machine = result["machine"]
  lines = [
      f"Model {model['image_size'][0]}x{model['image_size'][1]}x{model['channels']}, "
      f"k={model['time_steps']}, levels={model['levels']}, "
      f"feature_root={model['feature_root']}, motion_bottleneck="
      f"{model.get('motion_bottleneck', 0)}, latent {'x'.join(map(str, model['latent_shape']))}"
      f"; float32",
      f"Machine: {machine['processor'] or machine['machine']}, {machine['cpu_count']} CPUs, "
      f"{machine['intra_op_threads']} intra-op threads, TF {machine['tensorflow_version']}; "
      f"median of {result['runs']} runs after {result['warmup']} warmup",
      f"{'batch':>5}  {'mode':<10} {'GMAC/frame':>10} {'ms/frame':>9} {'frames/s':>9} "
      f"{'GFLOP/s':>8} {'dec/coup':>8}",
  ]
  for entry in result["results"]:
    for mode in MODES:
      numbers = entry[mode]
      ratio = f"{entry['speedup']:8.2f}" if mode == "decoupled" else f"{'':8}"
      lines.append(
          f"{entry['batch_size']:>5}  {mode:<10} {result['gmac_per_frame'][mode]:10.4f} "
          f"{numbers['ms_per_frame']:9.3f} {numbers['frames_per_second']:9.2f} "
          f"{numbers['gflops_per_second']:8.2f} {ratio}")
  if result.get("runtimes"):
    lines.append("Per runtime, batch 1, uint8 frames in (preprocessing + one call per network):")
    lines.append(f"{'runtime':<15} {'dec ms':>8} {'dec fps':>8} {'coup ms':>8} {'coup fps':>8} "
                 f"{'dec/coup':>8}")
    for name, entry in result["runtimes"].items():
      lines.append(
          f"{name:<15} {entry['decoupled']['ms_per_frame']:8.3f} "
          f"{entry['decoupled']['frames_per_second']:8.1f} "
          f"{entry['coupled']['ms_per_frame']:8.3f} {entry['coupled']['frames_per_second']:8.1f} "
          f"{entry['speedup']:8.2f}")
  if result.get("streams"):
    lines.append("Streams, one new frame each per step (batched: one multi-stream step; "
                 "separate: one detector per stream, in turn):")
    lines.append(f"{'runtime':<15} {'streams':>7} {'total fps':>10} {'per stream':>10} "
                 f"{'sep total':>10} {'sep/stream':>10} {'bat/sep':>8}")
    for name, entries in result["streams"].items():
      for entry in entries:
        batched, separate = entry["batched"], entry["separate"]
        lines.append(
            f"{name:<15} {entry['streams']:>7} {batched['total_frames_per_second']:10.1f} "
            f"{batched['per_stream_frames_per_second']:10.1f} "
            f"{separate['total_frames_per_second']:10.1f} "
            f"{separate['per_stream_frames_per_second']:10.1f} {entry['speedup']:8.2f}")
  video = result.get("end_to_end")
  if video:
    lines.append(
        f"End to end on {video['video']} ({video['timed_frames']} scored frames of "
        f"{'x'.join(map(str, video['frame_shape']))} timed; decoding alone "
        f"{video['decode_only_frames_per_second']:.0f} frames/s):")
    for name, entry in video["runtimes"].items():
      lines.append(f"{name:<15} {entry['frames_per_second']:8.1f} frames/s "
                   f"({entry['ms_per_frame']:.2f} ms/frame)")
    for scale, motion in video.get("motion_weighted", {}).items():
      lines.append(f"With motion_weighted, flow at {scale} of the input "
                   f"({'x'.join(map(str, motion['flow_shape']))}; the flow alone "
                   f"{motion['flow_only_ms_per_frame']:.2f} ms/frame with decoding; in its own "
                   "thread beside the model):")
      for name, entry in motion["runtimes"].items():
        lines.append(f"{name:<15} {entry['frames_per_second']:8.1f} frames/s "
                     f"({entry['ms_per_frame']:.2f} ms/frame)")
  return "\n".join(lines)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The benchmark's own flags (idempotent, like cli_flags.define_flags)."""
  if "output" not in flag_values:
    flags.DEFINE_string("output", "", "Write the results as JSON here (default: no file).",
                        flag_values=flag_values)
  if "runs" not in flag_values:
    flags.DEFINE_integer("runs", 50, "Timed runs per mode and batch size; the median counts.",
                         lower_bound=1, flag_values=flag_values)
  if "warmup" not in flag_values:
    flags.DEFINE_integer("warmup", 5, "Untimed runs before the timed ones.", lower_bound=0,
                         flag_values=flag_values)
  if "threads" not in flag_values:
    flags.DEFINE_integer("threads", 2, "TensorFlow intra-op threads.",
                         lower_bound=1, flag_values=flag_values)
  if "inter_op_threads" not in flag_values:
    flags.DEFINE_integer("inter_op_threads", 0, "TensorFlow inter-op threads; 0: TensorFlow's "
                         "default, as detect and serve run (a frame's encoder and motion model, "
                         "one compiled call, then run side by side); 1: one op at a time.",
                         lower_bound=0, flag_values=flag_values)
  if "runtimes" not in flag_values:
    names = list(runtime_variants())
    flags.DEFINE_list("runtimes", names, f"Runtimes timed at batch 1 through the streaming "
                      f"backends, from {', '.join(names)} (empty: none).",
                      flag_values=flag_values)
  if "video" not in flag_values:
    flags.DEFINE_string("video", "", "Also time end-to-end streaming detection on this video "
                        "file (or frames folder) per runtime.", flag_values=flag_values)
  if "video_frames" not in flag_values:
    flags.DEFINE_integer("video_frames", 300, "At most this many frames of --video.",
                         lower_bound=1, flag_values=flag_values)
  if "bench_batch_sizes" not in flag_values:
    flags.DEFINE_list("bench_batch_sizes", ["1", "8"], "Streams scored together.",
                      flag_values=flag_values)
  if "streams" not in flag_values:
    flags.DEFINE_list("streams", [], "Also time this many camera streams per runtime (e.g. "
                      "1,4,8): one multi-stream step over all against separate detectors.",
                      flag_values=flag_values)
  if "trained_model_dir" not in flag_values:
    flags.DEFINE_list("flow_scales", [], "With --video, also time detection with the "
                      "motion_weighted score, its optical flow at each of these fractions of "
                      "the video's resolution (e.g. 1,0.5,0.25).", flag_values=flag_values)
    flags.DEFINE_string("trained_model_dir", "", "Time the runtimes on this training run "
                        "(its checkpoint, and its exports for saved_model and litert) rather "
                        "than on an untrained model of the config; its geometry must be the "
                        "config's.", flag_values=flag_values)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  flag_values = flags.FLAGS
  # Thread pools are fixed when the TF runtime starts, so this must precede every op.
  tf.config.threading.set_intra_op_parallelism_threads(flag_values.threads)
  tf.config.threading.set_inter_op_parallelism_threads(flag_values.inter_op_threads)
  cfg = cli.exit_on_expected_errors(cli_flags.config_from_flags, flag_values)
  batch_sizes = [int(b) for b in flag_values.bench_batch_sizes]
  result = run_benchmark(cfg, flag_values.runs, flag_values.warmup, batch_sizes)
  if flag_values.runtimes:
    result.update(cli.exit_on_expected_errors(
        run_runtime_benchmark, cfg, flag_values.runtimes, flag_values.runs, flag_values.warmup,
        flag_values.threads, flag_values.video, flag_values.video_frames,
        [int(count) for count in flag_values.streams], flag_values.trained_model_dir,
        [float(scale) for scale in flag_values.flow_scales]))
  result["config"] = {"dataset": cfg.data.dataset, "ignored_mixed_precision":
                      cfg.train.mixed_precision}
  logging.info("Benchmark (dec/coup = decoupled / coupled frames/s):\n%s", format_table(result))
  if flag_values.output:
    with fileio.GFile(flag_values.output, "w") as f:
      json.dump(result, f, indent=2)
    logging.info("Wrote %s", flag_values.output)


if __name__ == "__main__":
  cli_flags.define_flags()
  define_flags()
  app.run(main)
