"""The training loop under tf.distribute: MirroredStrategy on two logical CPUs, and two
MultiWorkerMirroredStrategy workers on 127.0.0.1 configured by TF_CONFIG.

Strategies must be set up before TensorFlow initialises, so every scenario runs in fresh
processes.
"""

import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from daml_tf.training import local_cluster

REPO = pathlib.Path(__file__).resolve().parents[1]

# A tiny run: 2 synthetic videos, 32x48 frames, 2 epochs of 2 steps of 4 clips.
TINY_CONFIG = textwrap.dedent("""
    from tests import testing
    def tiny_config(data_dir, model_dir, strategy, **train):
      return testing.tiny_config(
          data_dir, model_dir, data=dict(batch_size=4, clips_per_epoch=8), train_epochs=1,
          finetune_epochs=1, image_summary_steps=1, strategy=strategy, calibration_holdout=0,
          **train)
""")

ONE_STEP = TINY_CONFIG + textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from daml_tf.training import loop as training
    from daml_tf.training import schedule
    from daml_tf.data import synthetic
    from daml_tf.models import build
    out = sys.argv[1]
    synthetic.generate(out + "/data", num_train_videos=2, num_test_videos=1, frames_per_video=24)
    cfg = tiny_config(out + "/data", out + "/model", "default", sync_batchnorm=True)
    # One fixed global batch, fed to both strategies.
    clip = np.random.RandomState(0).uniform(-0.5, 0.5, (4, 4, 32, 48, 1)).astype("float32")
    results = {}
    for name, strategy in [("default", tf.distribute.get_strategy()),
                           ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))]:
      tf.keras.utils.set_random_seed(0)
      with strategy.scope():
        model = build.build_model(cfg)
        schedule.compile_model(model, cfg.train)
      initial = [v.numpy() for v in model.trainable_variables]
      dataset = tf.data.Dataset.from_tensors(clip)
      batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
      @tf.function
      def step(batch):
        out = strategy.run(model.train_step, args=(batch,))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, out["total_loss"], axis=None)
      loss = float(step(batch))
      results[name] = (initial, loss, [v.numpy() for v in model.trainable_variables])
    assert strategy.num_replicas_in_sync == 2
    (i0, l0, w0), (i1, l1, w1) = results["default"], results["mirrored"]
    assert all(np.array_equal(a, b) for a, b in zip(i0, i1)), "different initial weights"
    loss_diff = abs(l0 - l1) / abs(l0)
    weight_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(w0, w1))
    step_size = max(float(np.max(np.abs(a - b))) for a, b in zip(w0, i0))
    print("RESULT", loss_diff, weight_diff, step_size)
""")

MIRRORED_RUN = TINY_CONFIG + textwrap.dedent("""
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from daml_tf.training import loop as training
    from daml_tf.training import schedule
    from daml_tf.data import synthetic
    synthetic.generate(sys.argv[1] + "/data", num_train_videos=2, num_test_videos=1,
                       frames_per_video=24)
    from daml_tf import run_dir
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    cfg = tiny_config(sys.argv[1] + "/data", sys.argv[1] + "/model", "mirrored", export=False)
    results = training.train(cfg, strategy).metrics
    assert strategy.num_replicas_in_sync == 2
    assert results["global_step"] == 4, results
    assert all(v == v for v in results.values()), results  # No NaN.
    model = run_dir.restore_model(cfg)
    print("OK", results["total_loss"])
""")

WORKER = TINY_CONFIG + textwrap.dedent("""
    import json, os, sys
    from absl import logging
    import numpy as np
    from daml_tf import train as train_command
    logging.set_verbosity(logging.INFO)  # The worker logs are the test's record.
    logging.set_stderrthreshold(logging.INFO)
    out, task = sys.argv[1], json.loads(os.environ["TF_CONFIG"])["task"]
    cfg = tiny_config(out + "/data", out + "/model", "multi_worker", checkpoint_every_steps=1)
    # Kept until the process ends: it holds the collective runtime (daml_tf.training.distributed).
    trained = train_command.run(cfg)
    np.savez(f"{out}/weights_{task['index']}.npz",
             *[v.numpy() for v in trained.model.trainable_variables])
    print("STEP", trained.metrics["global_step"])
""")


def _run(script, *args, env=None, timeout=600):
  return subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_mirrored_step_equals_default_step_on_the_same_global_batch(tmp_path):
  """With synchronised BatchNorm, 2 replicas x 2 clips must do what 1 replica x 4 clips does.

  Tolerance: float32 summation order differs (per-replica sums, then an all-reduce), so the
  loss may differ in its last bits (relative 1e-5) and the updated weights by far less than
  one Adam step (absolute 1e-5, against steps of about the learning rate, 1e-4).
  """
  result = _run(ONE_STEP, tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  line = [l for l in result.stdout.splitlines() if l.startswith("RESULT")][0]
  loss_diff, weight_diff, step_size = map(float, line.split()[1:])
  assert loss_diff < 1e-5
  assert weight_diff < 1e-5
  assert step_size > 5e-5  # The step did move the weights, so the comparison means something.


def test_training_loop_under_mirrored_strategy(tmp_path):
  result = _run(MIRRORED_RUN, tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "OK" in result.stdout


@pytest.mark.slow
def test_two_workers_train_identical_weights_and_only_the_chief_writes(tmp_path):
  from daml_tf.data import synthetic
  synthetic.generate(str(tmp_path / "data"), num_train_videos=2, num_test_videos=1,
                     frames_per_video=24)
  workers = local_cluster.start_workers([sys.executable, "-c", WORKER, str(tmp_path)], 2,
                                        str(tmp_path / "worker"), cwd=REPO)
  for process in workers:
    process.wait(timeout=900)
  logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
  for process, text in zip(workers, logs):
    assert process.returncode == 0, text[-3000:]
    assert "STEP 4" in text
  # Same all-reduced gradients from the same initial weights: the same weights, bit for bit.
  first, second = (np.load(tmp_path / f"weights_{i}.npz") for i in range(2))
  assert len(first.files) == len(second.files) > 0
  for name in first.files:
    np.testing.assert_array_equal(first[name], second[name])
  model_dir = tmp_path / "model"
  # The chief (worker 0) wrote everything; the other worker's scratch folder is gone.
  assert (model_dir / "config.json").exists()
  assert (model_dir / "export" / "saved_model.pb").exists() or any(
      (model_dir / "export").glob("*/saved_model.pb"))
  assert list((model_dir / "train").glob("events.out.tfevents.*"))
  assert not (model_dir / "workers_scratch" / "worker_1").exists()
  # The chief's last checkpoint restores into a fresh single-process model, with its weights.
  check = TINY_CONFIG + textwrap.dedent("""
      import sys
      import numpy as np
      from daml_tf import run_dir
      cfg = tiny_config(sys.argv[1] + "/data", sys.argv[1] + "/model", "default")
      model = run_dir.restore_model(cfg)
      saved = np.load(sys.argv[1] + "/weights_0.npz")
      for i, v in enumerate(model.trainable_variables):
        np.testing.assert_array_equal(v.numpy(), saved[f"arr_{i}"])
      print("RESTORED")
  """)
  result = _run(check, tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "RESTORED" in result.stdout
