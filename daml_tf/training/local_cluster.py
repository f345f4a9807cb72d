"""Starts a MultiWorkerMirroredStrategy cluster of processes on this machine.

For trying `--strategy=multi_worker` without several machines (and for the tests and the
workers benchmark): every worker is the same command, told its place in the cluster by its own
TF_CONFIG, with workers on free ports of 127.0.0.1.

Example:
  workers = local_cluster.start_workers(
      [sys.executable, "-m", "daml_tf.train", "--flagfile=configs/demo.cfg",
       "--strategy=multi_worker"], num_workers=2, log_prefix="/tmp/worker")
  statuses = [worker.wait() for worker in workers]  # Logs in /tmp/worker0.log, worker1.log.
"""

import json
import os
import socket
import subprocess
from typing import List, Optional, Sequence


def free_ports(count: int) -> List[int]:
  """`count` distinct ports of 127.0.0.1 that were free a moment ago."""
  sockets = [socket.socket() for _ in range(count)]
  try:
    for s in sockets:
      s.bind(("127.0.0.1", 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def start_workers(command: Sequence[str], num_workers: int, log_prefix: str,
                  cwd: Optional[str] = None) -> List[subprocess.Popen]:
  """Starts `num_workers` copies of `command`, worker i with its TF_CONFIG.

  Args:
    command: the argv every worker runs.
    num_workers: cluster size; worker 0 is the chief (the cluster has no "chief" job).
    log_prefix: worker i's stdout and stderr go to `<log_prefix><i>.log`.
    cwd: working directory of the workers.

  Returns:
    The processes, in worker order.
  """
  cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(num_workers)]}
  processes = []
  for index in range(num_workers):
    env = dict(os.environ, TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}))
    # The child keeps its own copy of the descriptor, so ours can close at once.
    with open(f"{log_prefix}{index}.log", "w") as log:
      processes.append(subprocess.Popen(list(command), cwd=cwd, env=env, stdout=log,
                                        stderr=subprocess.STDOUT))
  return processes
