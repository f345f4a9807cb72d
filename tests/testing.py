"""What the tests share: the tiny config, tiny datasets in the frames layout, a checkpointed tiny
run, synthetic camera frames, live-stream servers, and `python -m daml_tf.detect` run in a child
process with its outputs read back.

Test files import it as `testing` (pytest puts tests/ on sys.path); scripts the tests run in
child processes from the repository root import it as `tests.testing`.
"""

import contextlib
import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image

from daml_tf import config as config_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 32, 48
CAMERA = (45, 70)  # Not the model size and not a multiple of it: the graph must resize.
K = 3
LATENT = (16, 24, 8)  # levels=2, feature_root=4 on 32x48.
# Clip geometry and model of every tiny run; tests override single fields.
TINY_DATA = dict(dataset="synthetic", image_height=HEIGHT, image_width=WIDTH, channels=1,
                 time_steps=K, interval=1, delta=1, batch_size=2)
TINY_MODEL = dict(levels=2, feature_root=4)
DEFAULT_VIDEOS = {"training": {"01": 12, "02": 10}, "testing": {"01": 9, "02": 11}}
# Steps of each epoch of a short run (both phases, one epoch each).
STEPS_PER_EPOCH = 3


def tiny_config(data_dir="", model_dir="unused", data: Optional[dict] = None,
                model: Optional[dict] = None, **train) -> config_lib.Config:
  """The tiny run: 32x48 gray frames, k=3, a 2-level U-Net of 4 root channels.

  Args:
    data_dir: the dataset root.
    model_dir: the run's directory.
    data: DataConfig fields that differ from TINY_DATA.
    model: ModelConfig fields that differ from TINY_MODEL.
    **train: TrainConfig fields (its defaults otherwise).
  """
  return config_lib.Config(
      data=config_lib.DataConfig(**dict(TINY_DATA, data_dir=str(data_dir), **(data or {}))),
      model=config_lib.ModelConfig(**dict(TINY_MODEL, **(model or {}))),
      train=config_lib.TrainConfig(model_dir=str(model_dir), **train))


def config_from_args(*args) -> config_lib.Config:
  """The config the command-line flags `args` give (flagfiles relative to the working folder)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from daml_tf import cli_flags  # pylint: disable=g-import-not-at-top
  flag_values = flags.FlagValues()
  cli_flags.define_flags(flag_values)
  flag_values(["prog", *args])
  return cli_flags.config_from_flags(flag_values)


def short_run_config(data_dir, model_dir, **train) -> config_lib.Config:
  """A tiny run of two short epochs (train, finetune) that writes every kind of summary."""
  train_args = dict(train_epochs=1, finetune_epochs=1, image_summary_steps=2, log_every_steps=1)
  train_args.update(train)
  return tiny_config(data_dir, model_dir, data=dict(clips_per_epoch=2 * STEPS_PER_EPOCH),
                     **train_args)


def write_frames_dataset(root: str,
                         videos: Optional[Dict[str, Dict[str, int]]] = None,
                         size: Tuple[int, int] = (24, 32),
                         ext: str = ".png",
                         rgb: bool = False,
                         seed: int = 0) -> str:
  """Writes random frames as <root>/<split>/frames/<video>/<000..>.<ext>.

  Args:
    root: the dataset root to create.
    videos: {split: {video name: number of frames}}.
    size: (height, width) of the frames.
    ext: image file extension (any PIL can write).
    rgb: 3-channel frames instead of gray.
    seed: NumPy seed of the pixel values.

  Returns:
    root.
  """
  rng = np.random.RandomState(seed)
  shape = size + (3,) if rgb else size
  for split, counts in (DEFAULT_VIDEOS if videos is None else videos).items():
    for name, num_frames in counts.items():
      folder = os.path.join(root, split, "frames", name)
      os.makedirs(folder, exist_ok=True)
      for i in range(num_frames):
        pixels = rng.randint(0, 256, size=shape).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"{i:03d}{ext}"))
  return root


def make_run(model_dir, threshold, seed=0, data: Optional[dict] = None,
             model: Optional[dict] = None):
  """A run directory (config.json, one checkpoint, threshold.json) and its model.

  The model is untrained (random weights, BatchNorm statistics moved away from (0, 1) so no
  layer is an identity): export numerics do not depend on training, and building it takes a
  second. `data` and `model` override fields of the tiny config (interval 2 unless given).
  """
  # Deferred: dataset-only tests import this module without loading Keras.
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from daml_tf import run_dir  # pylint: disable=g-import-not-at-top
  from daml_tf.models import build  # pylint: disable=g-import-not-at-top
  cfg = tiny_config(model_dir=model_dir, data=dict(dict(interval=2), **(data or {})),
                    model=model)
  keras.utils.set_random_seed(seed)
  model = build.build_model(cfg)
  rng = np.random.default_rng(seed)
  model.set_background(rng.uniform(0.2, 0.6, (HEIGHT, WIDTH, 1)).astype("float32"))
  for weight in model.weights:
    if weight.path.endswith("moving_mean"):
      weight.assign(rng.normal(0, 0.1, weight.shape).astype("float32"))
    elif weight.path.endswith("moving_variance"):
      weight.assign(rng.uniform(0.5, 2.0, weight.shape).astype("float32"))
  run_dir.save_config(cfg, str(model_dir))
  tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                             run_dir.checkpoint_dir(str(model_dir)), 1).save()
  run_dir.save_threshold(str(model_dir), threshold["threshold"], threshold["quantile"])
  return cfg, model


def make_exported_run(model_dir, seed, data: Optional[dict] = None,
                      model: Optional[dict] = None):
  """`make_run` plus its serving and LiteRT exports (in model_dir/export), by the export CLI."""
  cfg, keras_model = make_run(model_dir, {"threshold": 0.5, "quantile": 0.99}, seed=seed,
                              data=data, model=model)
  result = subprocess.run(
      [sys.executable, "-m", "daml_tf.export", f"--model_dir={model_dir}",
       f"--export_dir={pathlib.Path(model_dir) / 'export'}", "--tflite"],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return cfg, keras_model


def assert_streams_as_evaluated(cfg, model, runtime_dir, folder, rtol, score="latent_mean"):
  """Streams the frames of `folder` through the runtime of `runtime_dir` (a run directory or an
  export) and checks its scores against the batch evaluation of the Keras `model`.

  A score of motion evidence gets a flow normalisation fitted on the video itself, given to
  both sides.

  Returns:
    the streaming results.
  """
  # Deferred: dataset-only tests import this module without loading Keras.
  from daml_tf.evaluation import calibration  # pylint: disable=g-import-not-at-top
  from daml_tf.evaluation import scoring as evaluation  # pylint: disable=g-import-not-at-top
  from daml_tf.models import scores  # pylint: disable=g-import-not-at-top
  from daml_tf.data import video_io  # pylint: disable=g-import-not-at-top
  from daml_tf.data import layout  # pylint: disable=g-import-not-at-top
  from daml_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  from daml_tf.inference import backends  # pylint: disable=g-import-not-at-top
  from daml_tf.inference import streaming  # pylint: disable=g-import-not-at-top
  video = layout.Video("video", tuple(video_io.list_frame_files(folder)))
  frames = pipeline.load_video(video, cfg.data.image_size, cfg.data.channels,
                               model.background.numpy())
  norm = (calibration.fit_motion_norm(model, [video], flow_scale=1.0)
          if scores.get_score(score).needs_motion else None)
  scorer = evaluation.VideoScorer(model, cfg.data, batch_size=8, score=score, motion_norm=norm)
  indices, expected = scorer.score(frames, scorer.motion_of(video))
  opened = backends.open_model(str(runtime_dir))
  detector = streaming.StreamingDetector(opened.backend, opened.data_cfg, score=score,
                                         motion_norm=norm)
  results = [detector.process(frame) for _, _, frame in video_io.iter_frames(folder)]
  assert [r.index for r in results if r.score is not None] == list(indices)
  np.testing.assert_allclose([r.score for r in results if r.score is not None], expected,
                             rtol=rtol, atol=1e-8)
  assert np.ptp(expected) > 0  # The comparison is not between constants.
  return results


def looping_stream(model_dir, folder, num_frames, size, fps):
  """(a camera video to loop as a live stream, a threshold its scores cross both ways).

  The threshold is the 70th percentile of the scores of the video's own decoded frames, looped
  three times as ffmpeg loops them, so alarms both start and end on the live stream.
  """
  # Deferred: dataset-only tests import this module without loading Keras.
  from daml_tf.data import video_io  # pylint: disable=g-import-not-at-top
  from daml_tf.inference import streaming  # pylint: disable=g-import-not-at-top
  video = write_stream_video(pathlib.Path(folder) / "camera.ts",
                             camera_frames(num_frames, 3, size=size), fps=fps)
  frames = [frame for _, _, frame in video_io.iter_frames(video)]
  detector = streaming.StreamingDetector.from_model_dir(str(model_dir))
  scores = [detector.process(frame).score for _ in range(3) for frame in frames]
  return video, float(np.percentile([s for s in scores if s is not None], 70))


def tiny_clips(num_frames, seed, batch=2):
  """float32 [batch, num_frames, HEIGHT, WIDTH, 1] of normal noise: clips for a tiny model."""
  return np.random.default_rng(seed).normal(size=(batch, num_frames, HEIGHT, WIDTH, 1)).astype(
      "float32")


def camera_frames(num_frames, channels, size=CAMERA, seed=0):
  """uint8 [N, H, W, C]: a smooth scene with a moving bright square, plus noise."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size[0], 0:size[1]]
  frames = []
  for t in range(num_frames):
    image = 100 + 50 * np.sin(xx / 6.0 + t / 4) + 30 * np.cos(yy / 5.0)
    image[10:20, 5 + 3 * t:15 + 3 * t] = 240
    layers = [image, np.roll(image, 4, axis=1), 255 - image, np.full_like(image, 200)]
    frame = np.stack(layers[:channels] if channels != 2 else [image, layers[3]], axis=-1)
    frames.append(np.clip(frame + rng.normal(0, 4, frame.shape), 0, 255).astype(np.uint8))
  return np.stack(frames)


def moving_frames(num_frames, height=HEIGHT, width=WIDTH, rgb=False, seed=0):
  """uint8 [N, H, W, 1|3]: a textured scene with a bright disc moving across it, plus noise."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:height, 0:width]
  scene = 90 + 40 * np.sin(xx / 5.0) + 30 * np.cos(yy / 7.0)
  frames = []
  for t in range(num_frames):
    image = scene.copy()
    cx, cy = (4 + 2.5 * t) % width, height / 2 + height / 5 * np.sin(t / 3)
    image[(xx - cx)**2 + (yy - cy)**2 < (height / 6)**2] = 235
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    frames.append(np.stack([image, np.roll(image, 3, axis=1), 255 - image], axis=-1)
                  if rgb else image[..., None])
  return np.stack(frames)


def write_pngs(folder, frames):
  """Writes frames as <folder>/<i>.png; returns the folder."""
  os.makedirs(folder, exist_ok=True)
  for i, frame in enumerate(frames):
    Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame).save(
        os.path.join(folder, f"{i}.png"))  # Unpadded names: natural order must hold.
  return str(folder)


def write_video(path, frames, codec="mjpeg", fps=25):
  """Writes uint8 frames as a video file with daml_tf.video_io; returns its path."""
  from daml_tf.data import video_io  # pylint: disable=g-import-not-at-top
  with video_io.VideoWriter(str(path), fps=fps, codec=codec) as writer:
    for frame in frames:
      writer.write(frame)
  return str(path)


# Live streams: real servers on 127.0.0.1, each in its own process.
SYSTEM_PYTHON = "/usr/bin/python3"  # Has the GStreamer bindings the RTSP server needs.
RTSP_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rtsp_server.py")


def write_stream_video(path, frames, fps=25):
  """Writes uint8 RGB frames as H.264 in MPEG-TS (what cameras and encoders stream), a key
  frame every 10 frames so a client joining mid-stream decodes within 0.4 s; returns the path."""
  import av  # pylint: disable=g-import-not-at-top
  with av.open(str(path), "w", format="mpegts") as container:
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = "yuv420p"
    stream.options = {"g": "10", "preset": "ultrafast", "tune": "zerolatency"}
    for frame in frames:
      video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
      for packet in stream.encode(video_frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return str(path)


def free_ports(count: int, kind=None) -> list:
  """`count` distinct ports of 127.0.0.1, free at the time of the call: all are held while they
  are picked, so two of them cannot be the same (two free_port calls can be)."""
  import socket  # pylint: disable=g-import-not-at-top
  sockets = [socket.socket(socket.AF_INET, kind or socket.SOCK_STREAM) for _ in range(count)]
  try:
    for sock in sockets:
      sock.bind(("127.0.0.1", 0))
    return [sock.getsockname()[1] for sock in sockets]
  finally:
    for sock in sockets:
      sock.close()


def free_port(kind=None) -> int:
  """A port of 127.0.0.1 free at the time of the call (TCP, or socket.SOCK_DGRAM)."""
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket(socket.AF_INET, kind or socket.SOCK_STREAM) as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def serve_ffmpeg(video, url, loop=True):
  """Starts the ffmpeg CLI sending `video` to `url` as live MPEG-TS (-re: at its frame rate),
  over and over with `loop`; http:// URLs are served to one client (-listen 1). Returns the
  Popen; the caller kills it."""
  import subprocess  # pylint: disable=g-import-not-at-top
  command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re"]
  command += ["-stream_loop", "-1"] if loop else []
  command += ["-i", str(video), "-c", "copy", "-f", "mpegts"]
  command += ["-listen", "1"] if url.startswith("http") else []
  return subprocess.Popen(command + [url], stdin=subprocess.DEVNULL)


def serve_rtsp(video, port, timeout=30.0):
  """Starts tests/rtsp_server.py (GStreamer) serving `video` as rtsp://127.0.0.1:PORT/live and
  waits until it listens. Returns the Popen; the caller kills it."""
  import select  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  process = subprocess.Popen([SYSTEM_PYTHON, RTSP_SERVER, str(video), str(port)],
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
  ready, _, _ = select.select([process.stdout], [], [], timeout)
  line = process.stdout.readline() if ready else ""
  if line.strip() != "ready":
    stop_server(process)
    raise RuntimeError(f"The RTSP server did not start within {timeout} s (printed {line!r}).")
  return process


def rtsp_server_available() -> bool:
  """The system Python has GStreamer's RTSP server bindings (installed by `make test`)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  check = ("import gi; gi.require_version('GstRtspServer', '1.0'); "
           "from gi.repository import GstRtspServer")
  try:
    return subprocess.run([SYSTEM_PYTHON, "-c", check], capture_output=True,
                          timeout=60).returncode == 0
  except (OSError, subprocess.TimeoutExpired):
    return False


def stop_server(process):
  """Kills a server started above (SIGKILL: a camera or encoder dying) and reaps it."""
  if process.poll() is None:
    process.kill()
  process.wait(timeout=30)


class Server:
  """A server process that `start()` starts (serve_ffmpeg, serve_rtsp), which a test kills and
  starts again; as a context manager, stopped on the way out.

  Attributes:
    process: the running server's Popen.
  """

  def __init__(self, start):
    self._start = start
    self.process = start()

  def stop(self):
    stop_server(self.process)

  def restart(self, down_s):
    """Kills the server (a camera or encoder dying) and starts it again `down_s` later."""
    self.stop()
    time.sleep(down_s)
    self.process = self._start()

  def __enter__(self):
    return self

  def __exit__(self, *_):
    self.stop()


def run_detect(*args, timeout=300) -> subprocess.CompletedProcess:
  """`python -m daml_tf.detect *args` from the repository root, to its end (output captured)."""
  return subprocess.run([sys.executable, "-m", "daml_tf.detect", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def detect_process(*args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE):
  """`python -m daml_tf.detect *args` in the background from the repository root: yields the
  Popen (text mode), killed on the way out if it still runs (a failed test leaves no child)."""
  process = subprocess.Popen([sys.executable, "-m", "daml_tf.detect", *args], cwd=REPO,
                             stdout=stdout, stderr=stderr, text=True)
  try:
    yield process
  finally:
    if process.poll() is None:
      process.kill()


def sigterm(process, timeout=60):
  """Sends SIGTERM and waits for the process to end: its stderr (None unless piped)."""
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=timeout)
  return stderr


def wait_until(condition, timeout_s, what, poll_s=0.05, process=None):
  """Polls `condition` until it holds; fails after timeout_s, or once `process` has ended."""
  deadline = time.monotonic() + timeout_s
  while not condition():
    assert process is None or process.poll() is None, f"the process ended waiting for {what}"
    assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
    time.sleep(poll_s)


def csv_rows(path):
  """The rows of a CSV file with a header (scores.csv), as dicts."""
  with open(path) as f:
    return list(csv.DictReader(f))


def json_lines(path):
  """The records of a JSON-lines file (events.jsonl)."""
  with open(path) as f:
    return [json.loads(line) for line in f]


def rows_written(scores_csv):
  """Frames written to scores.csv so far (the next frame's index; 0 before the file exists)."""
  try:
    return max(len(pathlib.Path(scores_csv).read_text().splitlines()) - 1, 0)
  except FileNotFoundError:
    return 0
