"""Which tf.distribute strategy a run uses and which process of it this is.

Collective strategies (multi-worker) must exist before TensorFlow runs its first op, so the
caller creates the strategy first. A finished multi-worker strategy must also stay alive until
the process ends: destroying it waits on peers that may have exited already (up to the
coordination service's heartbeat timeout, 40 s here). `training.train` therefore hands its
strategy back in its result, and `daml_tf.train` keeps that until it exits without the
runtime's teardown.
"""

import dataclasses

import tensorflow as tf

from daml_tf import fileio
from daml_tf import run_dir


def make_strategy(name: str) -> tf.distribute.Strategy:
  """The tf.distribute strategy of --strategy ("multi_worker" reads TF_CONFIG)."""
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.get_strategy()


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
  return strategy.cluster_resolver is not None


@dataclasses.dataclass(frozen=True)
class WorkerRole:
  """Which process of a (possibly multi-worker) run this is.

  Attributes:
    is_chief: the one process that writes checkpoints, summaries, the export and the
      threshold into the model directory.
    task: "<type>_<index>" (e.g. "worker_1"), naming the scratch folder of a non-chief.
  """

  is_chief: bool
  task: str


def worker_role(strategy: tf.distribute.Strategy) -> WorkerRole:
  """The chief is task "chief", or worker 0 when the cluster has no chief job."""
  resolver = strategy.cluster_resolver  # None for one-process strategies.
  task_type = getattr(resolver, "task_type", None)
  if resolver is None or task_type is None:
    return WorkerRole(is_chief=True, task="chief_0")
  task_id = int(resolver.task_id or 0)
  jobs = resolver.cluster_spec().as_dict()
  is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and
                                      "chief" not in jobs)
  return WorkerRole(is_chief=is_chief, task=f"{task_type}_{task_id}")


def own_dir(model_dir: str, role: WorkerRole) -> str:
  """Where this process writes: the model directory for the chief, else a scratch folder.

  Every worker must take part in saving (a save may run collective ops), but only the chief's
  copy is kept; `remove_scratch` deletes the others' at the end.
  """
  return model_dir if role.is_chief else run_dir.scratch_dir(model_dir, role.task)


def remove_scratch(model_dir: str, role: WorkerRole) -> None:
  if not role.is_chief:
    fileio.rmtree(own_dir(model_dir, role))


def collective_failure(error: tf.errors.OpError) -> str:
  """The line of a failed collective's error that says why ("... aborted by: Connection reset
  by peer"), rather than its generic first line."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  for line in lines:
    if "aborted by" in line or "unavailable" in line.lower():
      return line.rstrip(".")
  return lines[-1] if lines else type(error).__name__
