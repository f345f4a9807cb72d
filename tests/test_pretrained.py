"""The shipped Ped2 weights: they load, and on real Ped2 frames give the recorded scores.

The frame test needs the UCSD Ped2 copy: set DAML_DATA_DIR to the folder holding `ped2/`.
"""

import json
import os
import pathlib

from absl import flags
import numpy as np
import pytest

from daml_tf import cli_flags
from daml_tf import config as config_lib
from daml_tf.evaluation import scoring as evaluation
from daml_tf import run_dir
from daml_tf.data import layout
from daml_tf.data import pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]
PRETRAINED = REPO / "pretrained" / "ped2_cpu"
REFERENCE = PRETRAINED / "reference_scores.json"


def shipped_config(data_dir=""):
  flag_values = flags.FlagValues()
  cli_flags.define_flags(flag_values)
  flag_values(["prog", f"--flagfile={REPO / 'configs' / 'ped2_cpu.cfg'}",
               f"--model_dir={PRETRAINED}", f"--data_dir={data_dir}"])
  return cli_flags.config_from_flags(flag_values)


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
  monkeypatch.chdir(REPO)


def test_shipped_model_matches_its_config():
  cfg = shipped_config()
  saved = config_lib.load_config(str(PRETRAINED / "config.json"))
  assert saved.model == cfg.model
  assert (saved.data.image_size, saved.data.time_steps, saved.data.interval,
          saved.data.delta) == (cfg.data.image_size, cfg.data.time_steps, cfg.data.interval,
                                cfg.data.delta)
  model = run_dir.restore_model(cfg)
  assert np.isfinite(model.background.numpy()).all()
  total = sum(p.stat().st_size for p in PRETRAINED.rglob("*") if p.is_file())
  assert total < 20 * 2**20


@pytest.mark.skipif(not os.environ.get("DAML_DATA_DIR"),
                    reason="set DAML_DATA_DIR to the folder holding ped2/")
def test_shipped_model_reproduces_recorded_scores():
  cfg = shipped_config(os.environ["DAML_DATA_DIR"])
  reference = json.loads(REFERENCE.read_text())
  _, videos = layout.find_videos("ped2", cfg.data.data_dir, "testing")
  videos = {v.name: v for v in videos}
  model = run_dir.restore_model(cfg)
  scorer = evaluation.VideoScorer(model, cfg.data, batch_size=32)
  for name, recorded in reference["raw_scores"].items():
    frames = pipeline.load_video(videos[name], cfg.data.image_size, cfg.data.channels,
                                 model.background.numpy())
    frame_indices, scores = scorer.score(frames)
    assert frame_indices[0] == reference["first_scored_frame"]
    np.testing.assert_allclose(scores, recorded, rtol=1e-4, atol=1e-7)


def test_shipped_model_scores_alike_in_every_runtime():
  """Without the dataset: the run, its SavedModel and its LiteRT export, as shipped, stream the
  same camera-sized frames to the same scores."""
  from daml_tf.inference import streaming  # pylint: disable=g-import-not-at-top
  import testing  # pylint: disable=g-import-not-at-top
  frames = testing.camera_frames(24, channels=3, size=(240, 360), seed=3)
  scores = {}
  for path in (PRETRAINED, PRETRAINED / "export" / "1", PRETRAINED / "export" / "litert" / "1"):
    detector = streaming.StreamingDetector.from_model_dir(str(path))
    scores[path.name] = [detector.process(frame).score for frame in frames]
  reference = scores[PRETRAINED.name]
  clip_span = shipped_config().data.clip_span
  assert all(s is None for s in reference[:clip_span])
  assert all(s is not None and s > 0 for s in reference[clip_span:])
  for name, values in scores.items():
    np.testing.assert_allclose(values[clip_span:], reference[clip_span:], rtol=1e-4,
                               err_msg=name)


def test_training_from_the_shipped_weights_runs(tmp_path, frames_dataset):
  """`train --init_from=pretrained/ped2_cpu` starts from the shipped weights and trains."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  data_dir = frames_dataset(videos={"training": {"01": 14, "02": 14}}, size=(64, 96))
  model_dir = tmp_path / "model"
  result = subprocess.run(
      [sys.executable, "-m", "daml_tf.train", f"--flagfile={REPO / 'configs' / 'ped2_cpu.cfg'}",
       "--dataset=synthetic", f"--data_dir={data_dir}", f"--model_dir={model_dir}",
       f"--init_from={PRETRAINED}", "--train_epochs=1", "--finetune_epochs=0",
       "--clips_per_epoch=8", "--image_summary_steps=0", "--noexport", "--nocalibrate"],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "ckpt-1" in " ".join(os.listdir(model_dir / "checkpoints"))
