"""What the service's page costs detection: frames/s with the page closed, 1 and 5 viewers.

The service (`daml_tf.serve`, with `http:`) scores every camera's copy of --video as fast as it
can (file inputs, as tools/serve_capacity.py, whose flags and configuration this reuses), so a
page that took CPU from detection would show as fewer frames/s. A viewer is what the page opens
per camera: the MJPEG picture and the score stream, both read continuously. For each camera
count and viewer count, frames/s are measured over --window_s after --warmup_s; then the
viewers leave and the live JPEGs encoded over the next seconds are counted (0: encoding stops
with the last viewer). The load average is recorded: other work on the machine shows there.

  PYTHONPATH=. .venv/bin/python tools/http_viewers.py --video=ped2_test04_long.mp4 \\
      --model_dirs=pretrained/ped2_cpu --cameras=1,4 --viewers=0,1,5 \\
      --output=docs/bench/http_viewers.json
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from absl import app
from absl import flags

from tools import serve_capacity  # Its flags: --video, --model_dirs, --cameras, --output.

flags.DEFINE_list("viewers", ["0", "1", "5"], "Viewer counts to run.")
flags.DEFINE_float("warmup_s", 10.0, "Seconds after the service is up before measuring.")
flags.DEFINE_float("window_s", 20.0, "Seconds frames/s are measured over.")
flags.DEFINE_float("viewer_fps", 4.0, "http.viewer_fps of the service.")
FLAGS = flags.FLAGS


def _free_port():
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def _get(port, path):
  with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
    return json.loads(response.read())


def _totals(port):
  """(frames scored, live JPEGs encoded) over every camera."""
  cameras = _get(port, "/api/cameras")
  frames = sum(c["frames"] for c in cameras.values())
  with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
    text = response.read().decode()
  jpegs = sum(float(line.split()[-1]) for line in text.splitlines()
              if line.startswith("daml_camera_live_jpegs_total"))
  return frames, jpegs


class _Viewer:
  """Reads one camera's MJPEG picture and score stream, as an open page does, until closed."""

  def __init__(self, port, camera):
    self.connections = []
    self.bytes = 0
    self._threads = [threading.Thread(target=self._read, args=(port, path), daemon=True)
                     for path in (f"/api/{camera}/stream.mjpeg", f"/api/{camera}/scores")]
    for thread in self._threads:
      thread.start()

  def _read(self, port, path):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    self.connections.append(connection)
    try:
      connection.request("GET", path)
      response = connection.getresponse()
      while True:
        chunk = response.read1(65536)
        if not chunk:
          return
        self.bytes += len(chunk)
    except (OSError, http.client.HTTPException, AttributeError):
      return  # Closed by close().

  def close(self):
    for connection in self.connections:
      if connection.sock is not None:
        connection.sock.shutdown(socket.SHUT_RDWR)
      connection.close()


def _wait_healthy(port, process, timeout_s=300):
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if process.poll() is not None:
      raise RuntimeError("the service ended before it was up")
    try:
      with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
        if response.status == 200:
          return
    except OSError:
      pass
    time.sleep(0.5)
  raise RuntimeError("the service was not healthy in time")


def _run(count, viewers, work):
  port = _free_port()
  config = serve_capacity.write_config(
      count, FLAGS.model_dirs[:1], work,
      ["http:", "  host: 127.0.0.1", f"  port: {port}", f"  viewer_fps: {FLAGS.viewer_fps}"])
  with open(os.path.join(work, "serve.err"), "w") as err:
    process = subprocess.Popen([sys.executable, "-m", "daml_tf.serve", f"--config={config}",
                                "--log_every=0"], stdout=subprocess.DEVNULL, stderr=err)
  open_viewers = []
  try:
    _wait_healthy(port, process)
    open_viewers = [_Viewer(port, f"cam{i}") for _ in range(viewers) for i in range(count)]
    time.sleep(FLAGS.warmup_s)
    load_before = os.getloadavg()[0]
    frames0, jpegs0 = _totals(port)
    began = time.monotonic()
    time.sleep(FLAGS.window_s)
    frames1, jpegs1 = _totals(port)
    elapsed = time.monotonic() - began
    load_after = os.getloadavg()[0]
    received = sum(v.bytes for v in open_viewers)
    for viewer in open_viewers:
      viewer.close()
    time.sleep(2.0)  # The server notices the viewers have gone.
    _, jpegs2 = _totals(port)
    time.sleep(5.0)
    _, jpegs3 = _totals(port)
  finally:
    for viewer in open_viewers:
      viewer.close()
    process.send_signal(signal.SIGTERM)
    process.wait(120)
  return {"cameras": count, "viewers": viewers,
          "detection_frames_per_second": round((frames1 - frames0) / elapsed, 1),
          "per_camera_frames_per_second": round((frames1 - frames0) / elapsed / count, 1),
          "live_jpegs_per_second": round((jpegs1 - jpegs0) / elapsed, 2),
          "live_jpegs_in_5_s_after_last_viewer_left": jpegs3 - jpegs2,
          "bytes_received_by_viewers": received,
          "load_average_1min": [round(load_before, 2), round(load_after, 2)]}


def main(argv):
  del argv
  rows = []
  for count in (int(c) for c in FLAGS.cameras):
    for viewers in (int(v) for v in FLAGS.viewers):
      with tempfile.TemporaryDirectory() as work:
        row = _run(count, viewers, work)
      rows.append(row)
      print(json.dumps(row), flush=True)
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump({"video": FLAGS.video, "model_dir": FLAGS.model_dirs[0],
                 "viewer_fps": FLAGS.viewer_fps, "warmup_s": FLAGS.warmup_s,
                 "window_s": FLAGS.window_s, "cpus": os.cpu_count(),
                 "note": "file inputs scored as fast as possible; the load average includes "
                         "whatever else ran on the machine", "rows": rows}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
