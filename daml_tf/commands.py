"""The installed commands (`daml-train`, ...): each runs its `python -m daml_tf.<module>`.

runpy runs the module as `python -m` does (its `if __name__ == "__main__":` block), so a command
and its module cannot drift apart: same flags, same behaviour.
"""

import runpy

# {command: module}; pyproject.toml's [project.scripts] names these functions.
COMMANDS = {
    "daml-train": "daml_tf.train",
    "daml-evaluate": "daml_tf.evaluate",
    "daml-evaluate-events": "daml_tf.evaluate_events",
    "daml-calibrate": "daml_tf.calibrate",
    "daml-detect": "daml_tf.detect",
    "daml-serve": "daml_tf.serve",
    "daml-export": "daml_tf.export",
    "daml-prepare": "daml_tf.data.prepare",
    "daml-benchmark": "daml_tf.benchmark",
    "daml-rank-runs": "daml_tf.rank_runs",
}


def _run(command: str) -> None:
  runpy.run_module(COMMANDS[command], run_name="__main__", alter_sys=True)


def train() -> None:
  _run("daml-train")


def evaluate() -> None:
  _run("daml-evaluate")


def evaluate_events() -> None:
  _run("daml-evaluate-events")


def calibrate() -> None:
  _run("daml-calibrate")


def detect() -> None:
  _run("daml-detect")


def serve() -> None:
  _run("daml-serve")


def export() -> None:
  _run("daml-export")


def prepare() -> None:
  _run("daml-prepare")


def benchmark() -> None:
  _run("daml-benchmark")


def rank_runs() -> None:
  _run("daml-rank-runs")
