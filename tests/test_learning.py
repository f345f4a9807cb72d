"""The demo configuration learns: a short training reaches an AUC well above chance."""

import pathlib

from absl import flags
import pytest

from daml_tf import evaluation
from daml_tf import flags as daml_flags
from daml_tf import training
from daml_tf.data import synthetic

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_config_learns(tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)
  data_dir = tmp_path / "synthetic"
  synthetic.generate(str(data_dir), seed=0)
  flag_values = flags.FlagValues()
  daml_flags.define_flags(flag_values)
  # The demo's model and data, shortened: fewer clips per epoch and fewer epochs.
  flag_values(["prog", "--flagfile=configs/demo.cfg", f"--data_dir={data_dir}",
               f"--model_dir={tmp_path / 'model'}", "--clips_per_epoch=600",
               "--train_epochs=2", "--finetune_epochs=1", "--noexport", "--noplots"])
  cfg = daml_flags.config_from_flags(flag_values)
  training.train(cfg)
  metrics = evaluation.evaluate(cfg)
  # Chance is 0.5 and the frame-difference baseline reaches 0.58 on this data.
  assert metrics["micro_auc"] > 0.70, metrics
