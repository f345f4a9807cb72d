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


def _command(command: str):
  """The console-script function of `command`."""

  def run() -> None:
    runpy.run_module(COMMANDS[command], run_name="__main__", alter_sys=True)

  run.__name__ = command.replace("daml-", "").replace("-", "_")
  run.__doc__ = f"`{command}`: python -m {COMMANDS[command]}."
  return run


train = _command("daml-train")
evaluate = _command("daml-evaluate")
evaluate_events = _command("daml-evaluate-events")
calibrate = _command("daml-calibrate")
detect = _command("daml-detect")
serve = _command("daml-serve")
export = _command("daml-export")
prepare = _command("daml-prepare")
benchmark = _command("daml-benchmark")
rank_runs = _command("daml-rank-runs")
