"""Training throughput with 1 vs N MultiWorkerMirroredStrategy workers on this machine.

    .venv/bin/python -m daml_tf.bench_workers --workers=1,2 --output=workers.json -- \
        --flagfile=configs/demo.cfg --data_dir=data/synthetic --train_epochs=1 --finetune_epochs=0

Everything after `--` is passed to `python -m daml_tf.train` unchanged. For each worker count the
script starts that many training processes on 127.0.0.1 with a TF_CONFIG each (a fresh model
directory per run, under --work_dir), waits for them, and reads the chief's TensorBoard scalar
`epoch/clips_per_second` (global clips per second of wall time, so it already counts every
worker's share). The global batch stays the config's, so more workers means smaller per-worker
batches, as in a real scale-out at fixed batch size.
"""

import json
import os
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from daml_tf import fileio
from daml_tf.training import local_cluster
from daml_tf import run_dir

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_list("workers", ["1", "2"], "Worker counts to measure.")
  flags.DEFINE_string("work_dir", "", "Model directories go here (default: a temp folder).")
  flags.DEFINE_string("output", "", "Write the results as JSON here.")


def _epoch_scalars(logdir, tag):
  values = []
  for path in sorted(fileio.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          values.append(float(tf.make_ndarray(value.tensor)))
  return values


def run(workers, train_args, work_dir):
  model_dir = os.path.join(work_dir, f"workers_{workers}")
  command = [sys.executable, "-m", "daml_tf.train", *train_args, "--strategy=multi_worker",
             f"--model_dir={model_dir}", "--noexport", "--nocalibrate"]
  log_prefix = os.path.join(work_dir, f"workers_{workers}_task")
  start = time.perf_counter()
  processes = local_cluster.start_workers(command, workers, log_prefix)
  for index, process in enumerate(processes):
    if process.wait():
      raise RuntimeError(f"A worker of the {workers}-worker run failed; see "
                         f"{log_prefix}{index}.log.")
  wall = time.perf_counter() - start
  clips_per_second = _epoch_scalars(run_dir.summary_dir(model_dir),
                                    "epoch/clips_per_second")
  return {"workers": workers, "wall_seconds": wall, "epoch_clips_per_second": clips_per_second}


def main(argv):
  train_args = argv[1:]
  work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="bench_workers_")
  os.makedirs(work_dir, exist_ok=True)
  results = []
  for workers in (int(w) for w in FLAGS.workers):
    result = run(workers, train_args, work_dir)
    logging.info("%d worker(s): clips/s per epoch %s, wall %.1f s", workers,
                 ", ".join(f"{v:.1f}" for v in result["epoch_clips_per_second"]),
                 result["wall_seconds"])
    results.append(result)
  report = {"train_args": train_args, "cpu_count": os.cpu_count(), "results": results}
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump(report, f, indent=2)
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  define_flags()
  app.run(main)
