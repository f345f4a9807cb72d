"""The s3:// filesystem end to end (fsspec + s3fs), against a local S3 server (moto) on 127.0.0.1.

- TFRecords: the frames are uploaded to the bucket, converted there to TFRecords by the command
  line, and the clips read back from the bucket must equal the frames pipeline's clips of the
  local copy.
- A run directory: training reads its frames from the bucket and writes its run directory
  (checkpoints, threshold, serving export) there; evaluation and detection read the run from the
  bucket and write their outputs there, and detection reads its video from the bucket.

The commands run in subprocesses with the S3 settings in their environment, as a user runs them.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import testing
from testing import write_frames_dataset

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")

REPO = pathlib.Path(__file__).resolve().parents[1]
BUCKET = "daml-test"
TRAIN_VIDEOS = {"01": 9, "02": 12, "03": 7}

# Reads the clips back from S3 and compares them with the frames pipeline's of the local copy.
READER = textwrap.dedent("""
    import sys
    import numpy as np
    from daml_tf import config
    from daml_tf import cli
    from daml_tf.data import layout, pipeline, registry, tfrecord
    local, remote = sys.argv[1:]
    cfg = config.DataConfig(image_height=32, image_width=48, channels=1, time_steps=3,
                            interval=2, delta=1, batch_size=4, frame_cache="none")
    tfrecord.check_index(tfrecord.load_index(remote), cfg)
    background = tfrecord.load_background(remote)
    videos = layout.list_videos(local, "training", registry.get_spec("synthetic"))
    frames = pipeline.training_dataset(videos, background, cfg, training=False)
    records = tfrecord.training_dataset(remote, background, cfg, training=False)
    expected = np.concatenate([b.numpy() for b in frames.dataset])
    got = np.concatenate([b.numpy() for b in records.dataset])
    def canonical(clips):
      return clips[np.lexsort(clips.reshape(len(clips), -1).T[::-1])]
    assert records.num_clips == frames.num_clips == len(expected), (records.num_clips, len(got))
    np.testing.assert_array_equal(canonical(got), canonical(expected))
    np.testing.assert_array_equal(
        background,
        pipeline.compute_background([p for v in videos for p in v.frame_paths], (32, 48), 1))
    print("CLIPS", len(got))
    cli.exit_process(0)
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture
def s3(tmp_path):
  """(environment for subprocesses, boto3 client) of a fresh S3 server with one bucket."""
  port = _free_port()
  server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
  server.start()
  endpoint = f"http://127.0.0.1:{port}"
  credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_REGION": "us-east-1"}
  client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
  client.create_bucket(Bucket=BUCKET)
  # The variables the README documents for S3-compatible stores: plain HTTP to the endpoint.
  env = dict(os.environ, S3_ENDPOINT=endpoint, S3_USE_HTTPS="0", S3_VERIFY_SSL="0",
             **credentials)
  env.pop("AWS_PROFILE", None)
  try:
    yield env, client
  finally:
    server.stop()


def _upload(client, root: str, prefix: str) -> None:
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      client.upload_file(path, BUCKET, f"{prefix}/{os.path.relpath(path, root)}")


def test_tfrecords_on_s3_match_the_local_frames(s3, tmp_path):
  env, client = s3
  local = write_frames_dataset(str(tmp_path / "data"), videos={"training": TRAIN_VIDEOS},
                               size=(32, 48))
  _upload(client, local, "data")
  remote = f"s3://{BUCKET}/tfrecords"
  convert = subprocess.run(
      [sys.executable, "-m", "daml_tf.data.to_tfrecord", "--dataset=synthetic",
       f"--data_dir=s3://{BUCKET}/data", f"--output_dir={remote}", "--shards=2",
       "--image_height=32", "--image_width=48", "--frames_per_record=5"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert convert.returncode == 0, convert.stderr[-3000:]
  keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET,
                                                         Prefix="tfrecords/")["Contents"])
  # Temporary names were renamed away.
  assert keys == ["tfrecords/background.npy", "tfrecords/index.json",
                  "tfrecords/train-00000-of-00002.tfrecord",
                  "tfrecords/train-00001-of-00002.tfrecord"]

  read = subprocess.run([sys.executable, "-c", READER, local, remote], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300, check=False)
  assert read.returncode == 0, read.stderr[-3000:]
  assert f"CLIPS {sum(n - 5 for n in TRAIN_VIDEOS.values())}" in read.stdout

  # A second conversion is refused with one message, and exits cleanly after using S3.
  again = subprocess.run(
      [sys.executable, "-m", "daml_tf.data.to_tfrecord", "--dataset=synthetic",
       f"--data_dir=s3://{BUCKET}/data", f"--output_dir={remote}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert again.returncode == 1, again.stderr[-3000:]
  assert "already holds a TFRecord conversion" in again.stderr


def _keys(client, prefix):
  listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
  return sorted(o["Key"][len(prefix):] for o in listing.get("Contents", []))


def _command(module, *args, env):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_run_directory_data_and_detection_on_s3(s3, tmp_path):
  env, client = s3
  local = write_frames_dataset(str(tmp_path / "data"), size=(32, 48))
  counts = testing.DEFAULT_VIDEOS["testing"]
  np.savez(os.path.join(local, "synthetic.npz"),
           **{video: (np.arange(n) >= n // 2).astype(np.int8) for video, n in counts.items()})
  _upload(client, local, "data")
  data_dir, model_dir = f"s3://{BUCKET}/data", f"s3://{BUCKET}/runs/tiny"
  tiny = ["--dataset=synthetic", f"--data_dir={data_dir}", f"--model_dir={model_dir}",
          "--image_height=32", "--image_width=48", "--channels=1", "--time_steps=3",
          "--interval=1", "--delta=1", "--batch_size=2", "--levels=2", "--feature_root=4"]
  train = _command("daml_tf.train", *tiny, "--train_epochs=1", "--finetune_epochs=1",
                   "--clips_per_epoch=6", "--image_summary_steps=0", env=env)
  assert train.returncode == 0, train.stderr[-3000:]
  run_keys = _keys(client, "runs/tiny/")
  for expected in ("config.json", "background.npy", "threshold.json", "checkpoints/checkpoint",
                   "export/1/saved_model.pb"):
    assert expected in run_keys, run_keys
  assert not [k for k in run_keys if ".tmp-" in k], run_keys

  evaluate = _command("daml_tf.evaluate", *tiny, env=env)
  assert evaluate.returncode == 0, evaluate.stderr[-3000:]
  metrics = json.loads(client.get_object(Bucket=BUCKET, Key="runs/tiny/eval/metrics.json")
                       ["Body"].read())
  assert f"micro_auc={metrics['micro_auc']:.4f}" in evaluate.stdout

  video = tmp_path / "camera.avi"
  testing.write_video(str(video), testing.camera_frames(12, channels=3), fps=10)
  client.upload_file(str(video), BUCKET, "camera.avi")
  for source in (model_dir, f"{model_dir}/export"):
    out = f"detect-{'export' if source.endswith('export') else 'run'}"
    detect = _command("daml_tf.detect", f"--model_dir={source}",
                      f"--input=s3://{BUCKET}/camera.avi", f"--output_dir=s3://{BUCKET}/{out}",
                      env=env)
    assert detect.returncode == 0, detect.stderr[-3000:]
    assert {"scores.csv", "events.jsonl"} <= set(_keys(client, f"{out}/")), _keys(client, out)
    rows = client.get_object(Bucket=BUCKET, Key=f"{out}/scores.csv")["Body"].read().decode()
    assert len(rows.strip().splitlines()) == 1 + 12
