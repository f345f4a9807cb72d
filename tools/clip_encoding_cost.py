"""What an event clip costs per frame: CPU time and bytes of service.recorder.ClipWriter (the
RGB to YUV conversion, the encoder, the fragmented-MP4 muxer) for each encoder setting.

    PYTHONPATH=. .venv/bin/python tools/clip_encoding_cost.py [--frames=200] [--noise=8]

The frames are a synthetic camera scene (a textured background, two moving objects, Gaussian
sensor noise of sigma --noise), made before the timing. The CPU time is the process's
(time.process_time: every thread, so encoder threads count too); the first frame (which opens
the file and the encoder) is timed apart, and each case runs --repeats times, keeping its
fastest run (other processes only ever add time). The quality is the PSNR (dB, RGB) of the
decoded clip against the frames given. Prints one JSON line per case: {"case", "size",
"cpu_ms_per_frame", "wall_ms_per_frame", "open_ms", "bytes_per_frame", "psnr_db"}.
"""

import json
import os
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from daml_tf.service import recorder

flags.DEFINE_integer("frames", 200, "Frames encoded per case.")
flags.DEFINE_list("sizes", ["640x360", "240x360"], "Frame sizes, WIDTHxHEIGHT.")
flags.DEFINE_float("fps", 10.0, "The clips' frame rate (sets the keyframe interval).")
flags.DEFINE_float("noise", 3.0, "Sensor noise (sigma, in gray levels).")
flags.DEFINE_integer("repeats", 3, "Runs per case; the fastest is kept.")
flags.DEFINE_integer("threads", 1, "Encoder threads (0: FFmpeg's automatic choice).")
FLAGS = flags.FLAGS

CASES = (("libx264 ultrafast", "libx264", "ultrafast"),
         ("libx264 veryfast", "libx264", "veryfast"),
         ("mpeg4", "mpeg4", None))


def scene(count: int, width: int, height: int, noise: float, seed: int = 0) -> np.ndarray:
  """count uint8 [H, W, 3] frames: a fixed textured background, two moving boxes, noise."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  texture = rng.normal(0, 12, (height // 8 + 1, width // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)
  background = np.stack([60 + 80 * x / width, 90 + 60 * y / height,
                         120 + 40 * np.sin(x / 23.0)], -1) + texture[:height, :width]
  frames = np.empty((count, height, width, 3), np.uint8)
  for i in range(count):
    frame = background.copy()
    for speed, size, colour in ((3, height // 5, (200, 40, 40)), (-2, height // 3, (30, 30, 30))):
      x0 = (width // 2 + speed * i) % (width - size)
      y0 = (height // 3 + i) % (height - size)
      frame[y0:y0 + size, x0:x0 + size] = colour
    frame += rng.normal(0, noise, frame.shape)
    frames[i] = np.clip(frame, 0, 255)
  return frames


def psnr(path: str, frames: np.ndarray) -> float:
  import av  # pylint: disable=g-import-not-at-top
  with av.open(path) as container:
    decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
  assert decoded.shape == frames.shape, (decoded.shape, frames.shape)
  mse = np.mean((decoded.astype(np.float64) - frames) ** 2)
  return float(10 * np.log10(255.0 ** 2 / mse))


def measure(frames: np.ndarray, codec: str, preset, fps: float, threads: int) -> dict:
  """One run of a case: times, size, quality."""
  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "clip.mp4.part")
    writer = recorder.ClipWriter(path, fps, codec, x264_preset=preset or recorder.X264_PRESET,
                                 threads=threads)
    cpu, wall = time.process_time(), time.perf_counter()
    writer.write(0.0, frames[0])
    open_ms = (time.perf_counter() - wall) * 1e3
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(1, len(frames)):
      writer.write(i / fps, frames[i])
    writer.close()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    size = os.path.getsize(path)
    quality = psnr(path, frames)
  n = len(frames) - 1
  return {"cpu_ms_per_frame": round(cpu / n * 1e3, 2),
          "wall_ms_per_frame": round(wall / n * 1e3, 2), "open_ms": round(open_ms, 1),
          "bytes_per_frame": size // len(frames), "psnr_db": round(quality, 1)}


def main(argv):
  del argv
  for size in FLAGS.sizes:
    width, height = (int(v) for v in size.split("x"))
    frames = scene(FLAGS.frames, width, height, FLAGS.noise)
    for name, codec, preset in CASES:
      runs = [measure(frames, codec, preset, FLAGS.fps, FLAGS.threads)
              for _ in range(FLAGS.repeats)]
      result = min(runs, key=lambda run: run["cpu_ms_per_frame"])
      print(json.dumps({"case": name, "size": size, **result}), flush=True)


if __name__ == "__main__":
  app.run(main)
