"""BUILD covers every module and test file, so the Bazel targets cannot silently rot."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _build_targets():
  """(rule, name, srcs) of every rule call in BUILD, read with the Python parser."""
  tree = ast.parse((ROOT / "BUILD").read_text())
  targets = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      keywords = {k.arg: k.value for k in node.keywords}
      if "srcs" in keywords:
        srcs = [ast.literal_eval(e) for e in keywords["srcs"].elts]
        targets.append((node.func.id, ast.literal_eval(keywords["name"]), srcs))
  return targets


def test_every_module_has_a_library_target():
  covered = {src for rule, _, srcs in _build_targets() if rule == "py_library" for src in srcs}
  modules = {str(p.relative_to(ROOT)) for p in (ROOT / "daml_tf").rglob("*.py")}
  assert modules - covered == set(), "modules missing from BUILD py_library targets"
  assert covered - modules == set(), "BUILD names files that do not exist"


def test_every_test_file_has_a_test_target():
  targets = {name: srcs for rule, name, srcs in _build_targets() if rule == "py_test"}
  tests = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")}
  # One target per test file, named after it.
  assert {f"tests/{name}.py" for name in targets} == tests
  for name, srcs in targets.items():
    assert f"tests/{name}.py" in srcs and "tests/run_pytest.py" in srcs


def test_every_entry_point_has_a_binary():
  binaries = {srcs[0] for rule, _, srcs in _build_targets() if rule == "py_binary"}
  entry_points = {
      str(p.relative_to(ROOT)) for p in (ROOT / "daml_tf").rglob("*.py")
      if 'if __name__ == "__main__":' in p.read_text()
  }
  assert entry_points and entry_points == binaries


def test_target_names_are_unique():
  names = [name for _, name, _ in _build_targets()]
  assert len(names) == len(set(names))


def test_build_is_what_the_generator_writes():
  """BUILD is generated from the imports (tools/build_gen.py): run it after adding a module."""
  check = subprocess.run([sys.executable, "tools/build_gen.py", "--check"], cwd=ROOT,
                         check=False)
  assert check.returncode == 0, "BUILD is stale: run python tools/build_gen.py"
