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
from daml_tf import evaluation
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
