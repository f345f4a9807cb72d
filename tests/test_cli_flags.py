"""Flags -> Config: flagfile layering, dataset defaults, validation, round trip."""

import pathlib

from absl import flags
import pytest

import testing
from daml_tf import cli_flags
from daml_tf import config as config_lib
from daml_tf import errors
from daml_tf.data import registry

REPO = pathlib.Path(__file__).resolve().parents[1]


parse = testing.config_from_args


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
  # Flagfiles include each other by paths relative to the repository root.
  monkeypatch.chdir(REPO)


def test_demo_flagfile_layers_base_and_overrides():
  cfg = parse("--flagfile=configs/demo.cfg")
  assert cfg.data.dataset == "synthetic"
  assert cfg.train.finetune_lambda_p == 1.0  # From base.cfg.
  assert cfg.train.learning_rate == 1e-3  # demo.cfg overrides base.cfg.
  assert not cfg.model.latent_loss_trains_encoder
  # The command line overrides both.
  assert parse("--flagfile=configs/demo.cfg", "--batch_size=3").data.batch_size == 3


def test_ped2_flagfile_has_paper_settings():
  cfg = parse("--flagfile=configs/ped2.cfg")
  assert (cfg.data.image_height, cfg.data.image_width, cfg.data.channels) == (128, 192, 1)
  assert (cfg.data.time_steps, cfg.data.interval, cfg.data.delta) == (8, 2, 6)
  assert (cfg.model.levels, cfg.model.feature_root) == (4, 64)
  assert (cfg.train.train_epochs, cfg.train.finetune_epochs) == (25, 25)
  assert cfg.data.batch_size == 10 and cfg.train.mixed_precision == "mixed_float16"


def test_two_horizon_flagfile_layers_on_ped2_cpu():
  cfg = parse("--flagfile=experiments/ped2_accuracy/configs/ped2_cpu_two_horizon.cfg")
  assert (cfg.model.motion, cfg.model.motion_head_steps) == ("two_horizon", 0)
  assert (cfg.data.time_steps, cfg.data.interval, cfg.data.delta) == (6, 2, 4)
  assert (cfg.model.levels, cfg.model.feature_root) == (2, 8)  # From ped2_cpu.cfg.
  assert cfg.train.finetune_trains == "motion"


def test_zero_means_dataset_default():
  cfg = parse("--dataset=avenue")
  spec = registry.get_spec("avenue")
  assert cfg.data.image_size == spec.image_size and cfg.data.channels == spec.channels
  assert (cfg.data.time_steps, cfg.data.interval, cfg.data.delta) == (
      spec.time_steps, spec.interval, spec.delta)


@pytest.mark.parametrize("args,message", [
    (["--time_steps=1"], "--time_steps must be >= 2"),
    (["--interval=-2"], "--interval must be >= 1"),
    (["--normalize=max"], "--normalize must be one of"),
    (["--mixed_precision=float64"], "--mixed_precision must be one of"),
    (["--levels=5", "--image_height=72"], "divisible by 2^(levels-1) = 16"),
    (["--perturb=brightness:2"], "--perturb must be brightness:<factor>"),
])
def test_out_of_range_flags_name_the_flag(args, message):
  with pytest.raises(errors.ConfigError, match=message.replace("^", r"\^").replace(
      "(", r"\(").replace(")", r"\)")):
    parse("--dataset=synthetic", *args)


def test_unknown_dataset():
  with pytest.raises(registry.UnknownDatasetError, match="ped2"):
    parse("--dataset=ped3")


def test_config_json_round_trip(tmp_path):
  cfg = parse("--flagfile=configs/demo.cfg", "--model_dir=x")
  path = str(tmp_path / "config.json")
  config_lib.save_config(cfg, path)
  assert config_lib.load_config(path) == cfg


@pytest.mark.parametrize("name,levels,size,channels,k,epochs", [
    ("ped1", 5, (128, 192), 1, 8, (25, 25)),
    ("ped2", 4, (128, 192), 1, 8, (25, 25)),
    ("avenue", 4, (128, 224), 3, 6, (25, 25)),
    ("shanghaitech", 4, (128, 224), 3, 6, (15, 15)),
])
def test_paper_configs(name, levels, size, channels, k, epochs):
  cfg = parse(f"--flagfile=configs/{name}.cfg")
  assert cfg.data.dataset == name and cfg.model.levels == levels
  assert cfg.data.image_size == size and cfg.data.channels == channels
  assert (cfg.data.time_steps, cfg.data.interval, cfg.data.delta) == (k, 2, 6)
  assert (cfg.train.train_epochs, cfg.train.finetune_epochs) == epochs
  assert cfg.data.batch_size == 10 and cfg.train.learning_rate == 1e-4
  assert cfg.model.feature_root == 64 and cfg.model.latent_loss_trains_encoder


def test_every_config_parses_and_states_its_command_and_expectations():
  for path in sorted((REPO / "configs").glob("*.cfg")):
    cfg = parse(f"--flagfile=configs/{path.name}")
    assert cfg.data.dataset
    if path.name != "base.cfg":
      header = path.read_text().split("\n--", 1)[0]
      assert "Command:" in header and "Hardware:" in header and "AUC" in header, path.name


def test_camera_config_can_start_from_the_shipped_ped2_model():
  """configs/camera.cfg is the custom dataset with pretrained/ped2_cpu's geometry and model,
  so `--init_from=pretrained/ped2_cpu` is accepted (training.init_checkpoint compares these)."""
  from daml_tf import run_dir  # pylint: disable=g-import-not-at-top
  cfg = parse("--flagfile=configs/camera.cfg")
  assert cfg.data.dataset == "custom" and cfg.train.finetune_trains == "motion"
  assert (cfg.data.interval, cfg.data.delta) == (2, 4) and cfg.train.calibration_holdout > 0
  shipped = run_dir.load_config(str(REPO / "pretrained" / "ped2_cpu"))
  assert run_dir.architecture_differences(shipped, cfg, loss_fields=False) == []


def test_every_flag_has_the_help_of_its_config_field():
  """A flag's help is its field's description in the config class's docstring, written once."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  flag_values = flags.FlagValues()
  cli_flags.define_flags(flag_values)
  for section, cls in cli_flags._SECTIONS.items():  # pylint: disable=protected-access
    docs = cli_flags.field_docs(cls)
    for field in dataclasses.fields(cls):
      name = cli_flags._flag_name(section, field.name)  # pylint: disable=protected-access
      assert docs.get(field.name), f"{cls.__name__}.{field.name} has no description"
      assert flag_values[name].help.lower().startswith(docs[field.name][:20].lower())
