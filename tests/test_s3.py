"""The s3:// filesystem end to end, against a local S3 server (moto) on 127.0.0.1.

The frames are uploaded to the bucket, converted there to TFRecords by the command line, and the
clips read back from the bucket must equal the frames pipeline's clips of the local copy.

Everything that touches s3:// runs in subprocesses: tensorflow-io reads the S3_* variables when
its filesystem first starts, and its AWS SDK aborts the exit of any process that used S3
(tensorflow/io#2039; entry points leave through layout.exit_process), which would kill pytest.
"""

import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import pytest

from testing import write_frames_dataset

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("tensorflow_io")

REPO = pathlib.Path(__file__).resolve().parents[1]
BUCKET = "daml-test"
TRAIN_VIDEOS = {"01": 9, "02": 12, "03": 7}

# Reads the clips back from S3 and compares them with the frames pipeline's of the local copy.
READER = textwrap.dedent("""
    import sys
    import numpy as np
    from daml_tf import config
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
    layout.exit_process(0)
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
  # What tensorflow-io's S3 filesystem reads: plain HTTP to the local endpoint.
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
