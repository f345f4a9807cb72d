"""The package's structure: no import cycle among daml_tf modules (deferred imports included),
and the data-preparation commands load neither the models nor the inference code."""

import ast
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "daml_tf"


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(REPO).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def import_graph():
  """{module: daml_tf modules it imports anywhere in its body}, read with the Python parser.

  Imports inside functions count like module-level ones: deferring an import hides a cycle
  from the interpreter, not from the design. A package's __init__ importing its own
  submodules is not an edge.
  """
  paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}

  def resolve(name):
    while name and name not in paths:
      name = name.rpartition(".")[0]
    return name or None

  graph = {}
  for module, path in paths.items():
    is_package = path.name == "__init__.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        imported.update(resolve(alias.name) for alias in node.names)
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          anchor = module.split(".") if is_package else module.split(".")[:-1]
          anchor = anchor[:len(anchor) - node.level + 1]
          base = ".".join(anchor + ([node.module] if node.module else []))
        for alias in node.names:
          imported.add(resolve(f"{base}.{alias.name}") or resolve(base))
    imported.discard(None)
    imported.discard(module)
    if is_package:
      imported = {m for m in imported if not m.startswith(module + ".")}
    graph[module] = imported
  return graph


def find_cycle(graph):
  """One import cycle as a list of modules (first == last), or None."""
  state = {}
  stack = []

  def visit(module):
    state[module] = "open"
    stack.append(module)
    for dependency in sorted(graph.get(module, ())):
      if state.get(dependency) == "open":
        return stack[stack.index(dependency):] + [dependency]
      if dependency not in state:
        cycle = visit(dependency)
        if cycle:
          return cycle
    stack.pop()
    state[module] = "done"
    return None

  for module in sorted(graph):
    if module not in state:
      cycle = visit(module)
      if cycle:
        return cycle
  return None


def test_cycle_finder_sees_a_deferred_cycle():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert find_cycle(graph) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_import_graph_reads_deferred_imports(tmp_path):
  graph = import_graph()
  # train.py imports training at module level; the graph has the edges of the whole package.
  assert "daml_tf.training.loop" in graph["daml_tf.train"]
  assert "daml_tf.run_dir" in graph["daml_tf.training.loop"]


def test_daml_tf_has_no_import_cycle():
  cycle = find_cycle(import_graph())
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _imported_modules(module, *args):
  """The daml_tf modules `python -X importtime -m module args` imports."""
  result = subprocess.run([sys.executable, "-X", "importtime", "-m", module, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  # absl's --help prints the usage and exits with status 1.
  assert "--output_dir" in result.stdout, result.stderr[-3000:]
  names = [line.split("|")[-1].strip() for line in result.stderr.splitlines()
           if line.startswith("import time:")]
  return {name for name in names if name.startswith("daml_tf")}


@pytest.mark.parametrize("module", ["daml_tf.data.prepare", "daml_tf.data.synthetic"])
def test_data_preparation_loads_no_model_or_inference_code(module):
  imported = _imported_modules(module, "--help")
  assert module in imported or module.rpartition(".")[0] in imported
  loaded = sorted(m for m in imported
                  if m.startswith(("daml_tf.models", "daml_tf.inference", "daml_tf.training")))
  assert not loaded, f"{module} --help imports {loaded}"


# The package's layers, bottom to top: a module imports only modules of its own layer or below.
# Entry points (flags -> a frozen config -> one library call) sit on top, wherever they live.
LAYERS = (
    ("base", ("errors", "fileio", "progress", "smoothing", "metrics", "dataclass_flags", "cli",
              "localize", "mqtt_common")),
    ("data", ("data",)),
    ("config", ("config", "cli_flags")),
    ("models", ("models",)),
    ("run_dir", ("run_dir",)),
    ("evaluation", ("evaluation",)),
    ("inference", ("inference",)),
    ("service", ("service",)),
    ("training", ("training",)),
    ("entry", ("train", "evaluate", "evaluate_events", "calibrate", "detect", "serve", "export",
               "benchmark", "bench_workers", "rank_runs", "commands", "video_io",
               "data.to_tfrecord", "data.prepare.__main__", "data.synthetic")),
)


def layer_of(module: str) -> int:
  """The index in LAYERS of a daml_tf module (the longest matching prefix wins)."""
  name = module[len("daml_tf."):] if module != "daml_tf" else ""
  best, best_length = None, -1
  for index, (_, prefixes) in enumerate(LAYERS):
    for prefix in prefixes:
      if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_length:
        best, best_length = index, len(prefix)
  return best


def test_every_module_has_a_layer():
  missing = [m for m in import_graph() if m != "daml_tf" and layer_of(m) is None]
  assert not missing, f"modules in no layer of LAYERS: {missing}"


def test_imports_only_go_down_the_layers():
  upward = []
  for module, imported in import_graph().items():
    if module == "daml_tf":
      continue
    for dependency in imported:
      if dependency != "daml_tf" and layer_of(dependency) > layer_of(module):
        upward.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {dependency} "
                      f"({LAYERS[layer_of(dependency)][0]})")
  assert not upward, "\n".join(sorted(upward))


def test_package_root_holds_entry_points_and_base_modules_only():
  """The root of daml_tf: commands, and the base layer; everything else lives in a folder."""
  root = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
  allowed = set(LAYERS[0][1]) | {"config", "cli_flags", "run_dir"} | {
      name for name in LAYERS[-1][1] if "." not in name}
  assert root <= allowed, f"modules at the root that are neither: {sorted(root - allowed)}"
