"""Checkpoints of a training run: what they hold, restoring the newest readable one, saving."""

from typing import Optional

from absl import logging
import tensorflow as tf

from daml_tf import fileio
from daml_tf.training import distributed
from daml_tf import errors
from daml_tf import run_dir
from daml_tf.models import DAML


def make_checkpoint(model: DAML, epochs_done: tf.Variable,
                    epoch_steps_done: Optional[tf.Variable] = None,
                    batches_drawn: Optional[tf.Variable] = None) -> tf.train.Checkpoint:
  """Weights, optimizer state (with the global step), the position in the schedule and the
  position in the data stream (batches drawn so far, finetune candidates' included)."""
  position = {name: variable for name, variable in (("epoch_steps_done", epoch_steps_done),
                                                    ("batches_drawn", batches_drawn))
              if variable is not None}
  return tf.train.Checkpoint(model=model, optimizer=model.optimizer, epochs_done=epochs_done,
                             **position)

# Counters added to the checkpoint after daml_tf first shipped one; older checkpoints lack them.
_LATER_COUNTERS = ("epoch_steps_done", "batches_drawn")

def restore_one(checkpoint: tf.train.Checkpoint, path: str) -> None:
  """Restores `path` into `checkpoint`, also when it predates a counter of _LATER_COUNTERS.

  Checkpoints of daml_tf before `epoch_steps_done` existed (the shipped pretrained/ped2_cpu)
  hold whole epochs only; the counter then stays 0, which is what it meant for them. Before
  `batches_drawn` existed a resumed run restarted the data stream, which a 0 also means.
  """
  names = tf.train.load_checkpoint(path).get_variable_to_shape_map()
  present = {counter: getattr(checkpoint, counter) for counter in _LATER_COUNTERS
             if hasattr(checkpoint, counter) and
             any(name.startswith(counter) for name in names)}
  checkpoint = tf.train.Checkpoint(model=checkpoint.model, optimizer=checkpoint.optimizer,
                                   epochs_done=checkpoint.epochs_done, **present)
  checkpoint.restore(path).assert_existing_objects_matched()

def restore_latest(checkpoint: tf.train.Checkpoint, checkpoint_dir: str) -> Optional[str]:
  """Restores the newest checkpoint of checkpoint_dir that can be read; returns its path.

  Checkpoint files are complete before the `checkpoint` state file names them (TensorFlow
  writes that file atomically, after the data), so a kill during a save leaves the state
  pointing at the previous checkpoint. Falling back to older ones also covers files damaged
  later, for example by a full disk.
  """
  state = tf.train.get_checkpoint_state(checkpoint_dir)
  if state is None:
    return None
  for path in reversed(list(state.all_model_checkpoint_paths)):
    try:
      restore_one(checkpoint, path)
      return path
    # A truncated file surfaces as an IndexError from the checkpoint reader.
    except (tf.errors.OpError, ValueError, AssertionError, IndexError) as error:
      logging.warning("Cannot restore %s (%s); trying an older checkpoint.", path,
                      str(error).splitlines()[0] if str(error) else type(error).__name__)
  raise errors.TrainingError(f"No checkpoint in {checkpoint_dir} can be restored.")

class Checkpoints:
  """The run's checkpoint (weights, optimizer, position in the schedule) and its manager.

  Every process saves (a save may run collective ops) into its own directory, but all of them
  resume from the chief's checkpoints, the only ones kept.
  """

  def __init__(self, model: DAML, model_dir: str, role: distributed.WorkerRole,
               to_keep: int):
    self.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
    self.epoch_steps_done = tf.Variable(0, dtype=tf.int64, trainable=False,
                                        name="epoch_steps_done")
    self.batches_drawn = tf.Variable(0, dtype=tf.int64, trainable=False, name="batches_drawn")
    self._model = model
    self._model_dir = model_dir
    self._role = role
    self._checkpoint = make_checkpoint(model, self.epochs_done, self.epoch_steps_done,
                                       self.batches_drawn)
    self._manager = tf.train.CheckpointManager(
        self._checkpoint, run_dir.checkpoint_dir(distributed.own_dir(model_dir, role)),
        max_to_keep=to_keep or None)  # 0 (--checkpoints_to_keep): keep every one

  def restore(self) -> bool:
    """Restores the run's newest checkpoint; returns whether there was one."""
    restored = restore_latest(self._checkpoint, run_dir.checkpoint_dir(self._model_dir))
    if restored:
      logging.info("Resuming from %s: %d epoch(s) and %d step(s) of the next done, step %d, "
                   "%d batches drawn", restored, int(self.epochs_done.numpy()),
                   int(self.epoch_steps_done.numpy()),
                   int(self._model.optimizer.iterations.numpy()),
                   int(self.batches_drawn.numpy()))
    return bool(restored)

  def save(self) -> None:
    path = self._manager.save(checkpoint_number=self._model.optimizer.iterations)
    if self._role.is_chief:
      logging.info("Saved checkpoint %s", path)
      # A run directory on s3:// (...) is a local mirror: the checkpoint reaches the store now,
      # so a preempted run resumes from it.
      fileio.sync_mirrors()
    else:
      fileio.rmtree(self._manager.directory)
