"""The runtime registry: open_model asks every runtime, and a new runtime is one class plus one
registry line that the detector and the benchmark pick up."""

import json
import os

import numpy as np
import pytest

import testing
from daml_tf import benchmark
from daml_tf.inference import backends
from daml_tf.inference import streaming
from daml_tf.models import build

MARKER = "constant_runtime.json"


class ConstantBackend:
  """Codes that are the frame's mean brightness; the prediction is the last code."""

  name = "constant"

  def __init__(self, data_cfg):
    self.image_size = tuple(data_cfg.image_size)
    self.channels = data_cfg.channels
    self.time_steps = data_cfg.time_steps

  def encode(self, frame):
    return np.full((1, 2, 2, 1), np.mean(frame, dtype=np.float32) / 255, np.float32)

  def predict(self, past):
    return past[:, -1]


class ConstantRuntime(backends.Runtime):
  """Recognises a directory holding MARKER, written by `write`."""

  name = "constant"

  def recognises(self, path):
    return os.path.isfile(os.path.join(path, MARKER))

  def open(self, path, precision="float32", num_threads=None):
    with open(os.path.join(path, MARKER)) as f:
      stored = json.load(f)
    data_cfg = testing.tiny_config().data
    return backends.OpenedModel(ConstantBackend(data_cfg), data_cfg, stored["threshold"])

  def write(self, model, cfg, work_dir):
    path = os.path.join(work_dir, "constant")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, MARKER), "w") as f:
      json.dump({"threshold": {"threshold": 0.5, "quantile": 1.0}}, f)
    return path


@pytest.fixture
def registered(monkeypatch):
  monkeypatch.setitem(backends.RUNTIMES, "constant", ConstantRuntime())  # The registry line.


def test_open_model_asks_every_registered_runtime(registered, tmp_path):
  path = ConstantRuntime().write(None, None, str(tmp_path))
  # A directory of numbered versions resolves to its highest version a runtime recognises.
  os.rename(path, tmp_path / "3")
  detector = streaming.StreamingDetector.from_model_dir(str(tmp_path))
  assert isinstance(detector.backend, ConstantBackend) and detector.threshold == 0.5
  frames = testing.camera_frames(6, 1)
  results = [detector.process(frame) for frame in frames]
  span = detector.data_cfg.clip_span
  assert [r.score for r in results[:span]] == [None] * span
  assert all(r.score is not None for r in results[span:])


def test_a_directory_no_runtime_recognises_is_refused(tmp_path):
  with pytest.raises(FileNotFoundError, match="neither a training run"):
    backends.open_model(str(tmp_path))


def test_the_benchmark_times_every_registered_runtime(registered, tmp_path):
  assert {"keras", "saved_model", "litert_float32", "litert_float16", "constant"} == set(
      benchmark.runtime_variants())
  cfg = testing.tiny_config()
  model = build.float32_model(cfg)
  opened = benchmark.make_backends(model, cfg, ["constant"], str(tmp_path), threads=1)
  assert isinstance(opened["constant"], ConstantBackend)
  macs = {"decoupled": 1, "coupled": 1}
  entry = benchmark.time_backend(opened["constant"], cfg, runs=2, warmup=1, macs=macs)
  assert entry["decoupled"]["frames_per_second"] > 0
