"""The training loop under MirroredStrategy, on two logical CPU devices of one process."""

import pathlib
import subprocess
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[1]

# Logical devices must be configured before TensorFlow initialises, hence a fresh process.
SCRIPT = textwrap.dedent("""
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from daml_tf import config as config_lib, training
    from daml_tf.data import synthetic
    synthetic.generate(sys.argv[1] + "/data", num_train_videos=2, num_test_videos=1,
                       frames_per_video=24)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    training.make_strategy = lambda name: strategy
    cfg = config_lib.Config(
        data=config_lib.DataConfig(dataset="synthetic", data_dir=sys.argv[1] + "/data",
                                   image_height=32, image_width=48, time_steps=3, interval=1,
                                   delta=1, batch_size=4, clips_per_epoch=8),
        model=config_lib.ModelConfig(levels=2, feature_root=4),
        train=config_lib.TrainConfig(model_dir=sys.argv[1] + "/model", train_epochs=1,
                                     finetune_epochs=1, image_summary_steps=1, export=False))
    results = training.train(cfg)
    assert strategy.num_replicas_in_sync == 2
    assert results["global_step"] == 4, results
    assert all(v == v for v in results.values()), results  # No NaN.
    model = training.restore_model(cfg)
    print("OK", results["total_loss"])
""")


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
  result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "OK" in result.stdout
