"""What the frame loop pays per alarm event for --mqtt: the wall time of MqttSink.emit, with the
broker up and with nothing listening (events queued in memory for later).

    PYTHONPATH=. .venv/bin/python tools/mqtt_overhead.py [--events=2000]

Starts its own mosquitto on a free 127.0.0.1 port (for "up"). Frames without an event do not
touch the sink at all, so a run's slow-down is (events) x (this time). Prints one JSON line:
{case: {"median_us", "p99_us", "max_us", "delivered", "gc_gen2_ms"}}; gc_gen2_ms lists the
full (generation 2) garbage collections of Python during the case, in ms: one of them landing
in an emit makes its max (events queued while the broker is away are long-lived objects and
bring the next one sooner; the detection loop's own allocations trigger them too).
"""

import gc
import json
import shutil
import socket
import subprocess
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from daml_tf.inference import events
from daml_tf.inference import mqtt

flags.DEFINE_integer("events", 2000, "Events emitted per case.")
FLAGS = flags.FLAGS


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def record(frame: int) -> events.Record:
  return {"camera": "cam", "event": events.ALARM_START, "frame": frame,
          "timestamp_s": frame / 25, "time": events.utc_now_iso(), "score": 0.12,
          "peak_score": 0.12, "box": [10, 20, 30, 40]}


def measure(port: int, count: int, wait_connected: bool) -> dict:
  sink = mqtt.MqttSink(mqtt.MqttConfig("127.0.0.1", port, "daml", queue_size=count,
                                       flush_timeout_s=10))
  if wait_connected:
    assert sink.wait_connected(10), "no connection to the broker"
  else:
    time.sleep(0.5)  # The first connection attempt has failed by now.
  times = []
  collections = []
  started = {}

  def on_gc(phase, info):
    if phase == "start":
      started["t"] = time.perf_counter()
    elif info["generation"] == 2:
      collections.append(round((time.perf_counter() - started["t"]) * 1e3, 1))

  gc.callbacks.append(on_gc)
  for frame in range(count):
    item = record(frame)
    start = time.perf_counter()
    sink.emit(item)
    times.append(time.perf_counter() - start)
    time.sleep(0.001)  # Events come one at a time, as frames do.
  gc.callbacks.remove(on_gc)
  sink.close()
  micro = np.array(times) * 1e6
  return {"median_us": round(float(np.median(micro)), 1),
          "p99_us": round(float(np.percentile(micro, 99)), 1),
          "max_us": round(float(micro.max()), 1), "delivered": sink.stats.delivered,
          "gc_gen2_ms": collections}


def main(argv):
  del argv
  binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
  port = free_port()
  with tempfile.TemporaryDirectory() as directory:
    conf = f"{directory}/mosquitto.conf"
    with open(conf, "w") as f:
      f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    broker = subprocess.Popen([binary, "-c", conf], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
      time.sleep(0.5)
      results = {"broker_up": measure(port, FLAGS.events, True)}
    finally:
      broker.terminate()
      broker.wait()
  results["nothing_listening"] = measure(free_port(), FLAGS.events, False)
  print(json.dumps(results))


if __name__ == "__main__":
  app.run(main)
