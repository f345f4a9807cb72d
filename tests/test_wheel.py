"""The installable distribution: the wheel holds the package and its labels, and its commands run.

Built with pip from the working tree and installed with --no-deps into a fresh prefix, so the
commands run against the dependencies of this environment, as `pip install --no-deps .` would.
"""

import glob
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """(wheel path, environment with the installed package first on the path, prefix)."""
  work = tmp_path_factory.mktemp("wheel")
  # A copy of what the distribution is made of: setuptools writes build/ beside its sources.
  source = work / "source"
  shutil.copytree(REPO / "daml_tf", source / "daml_tf",
                  ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(REPO / name, source / name)
  build = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
       "-w", str(work / "dist"), str(source)], capture_output=True, text=True, timeout=600)
  assert build.returncode == 0, build.stderr[-3000:]
  (wheel,) = glob.glob(str(work / "dist" / "daml_tf-*.whl"))
  prefix = work / "prefix"
  install = subprocess.run(
      [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
       "--prefix", str(prefix), wheel], capture_output=True, text=True, timeout=600)
  assert install.returncode == 0, install.stderr[-3000:]
  site = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
  env = dict(os.environ, PYTHONPATH=site)
  return wheel, env, prefix


def test_wheel_holds_the_package_and_its_labels(installed):
  wheel, _, _ = installed
  names = zipfile.ZipFile(wheel).namelist()
  assert "daml_tf/serve.py" in names and "daml_tf/service/runner.py" in names
  assert "daml_tf/data/labels/ped2.mat" in names
  assert {"daml_tf/service/web/static/index.html", "daml_tf/service/web/static/app.js",
          "daml_tf/service/web/static/style.css"} <= set(names)
  assert not [n for n in names if n.startswith(("tests/", "experiments/", "tools/"))]
  metadata = zipfile.ZipFile(wheel).read(
      next(n for n in names if n.endswith("METADATA"))).decode()
  assert "Requires-Dist: tensorflow-cpu" in metadata


@pytest.mark.parametrize("command", ["daml-detect", "daml-serve", "daml-train",
                                     "daml-evaluate-events"])
def test_installed_commands_run(installed, command, tmp_path):
  _, env, prefix = installed
  # Outside the repository, so the installed package is the one imported.
  result = subprocess.run([str(prefix / "bin" / command), "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
  # absl's --help prints the flags and exits with status 1.
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert "Try --helpfull to get a list of all flags." in result.stdout, result.stderr[-3000:]
  where = subprocess.run([sys.executable, "-c", "import daml_tf; print(daml_tf.__file__)"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
  assert str(prefix) in where.stdout
