"""The study's tables and the verdict of RULE.md, computed from its results (not by hand).

  .venv/bin/python -m experiments.motion_evidence.table [--results=experiments/motion_evidence/results]

Prints markdown: the AUC table (every model, latent_mean and every variant), the means per
recipe, the event-level table, and the decision the rule prescribes.
"""

import glob
import json
import os

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("results", os.path.join(os.path.dirname(__file__), "results"),
                    "The folder of auc.json and events/.")
RECIPES = ("ped2_cpu", "camera")
METRICS = ("micro_auc", "macro_auc", "online_auc", "eer")


def recipe_of(run: str) -> str:
  return next(recipe for recipe in RECIPES if run.startswith(recipe + "_"))


def mean(values):
  values = list(values)
  return sum(values) / len(values)


def verdict(runs, candidate: str, scales) -> dict:
  """RULE.md's decision: adopt when the candidate's online AUC beats latent_mean's on every
  model and its micro AUC averaged over the models is at most 0.005 below; the flow scale is the
  smallest whose mean online and micro AUC are both within 0.005 of full resolution's."""
  online_wins = {run: rows[candidate]["online_auc"] > rows["latent_mean"]["online_auc"]
                 for run, rows in runs.items()}
  micro_change = mean(rows[candidate]["micro_auc"] - rows["latent_mean"]["micro_auc"]
                      for rows in runs.values())
  adopt = all(online_wins.values()) and micro_change >= -0.005
  scale = 1.0
  if adopt:
    full = {m: mean(rows[candidate][m] for rows in runs.values())
            for m in ("online_auc", "micro_auc")}
    for variant, value in sorted(scales.items(), key=lambda item: item[1]):
      if all(abs(mean(rows[variant][m] for rows in runs.values()) - full[m]) <= 0.005
             for m in full):
        scale = value
        break
  targets = {}
  for recipe in RECIPES:
    recipe_runs = [rows for run, rows in runs.items() if recipe_of(run) == recipe]
    online = mean(rows[candidate]["online_auc"] for rows in recipe_runs)
    micro = mean(rows[candidate]["micro_auc"] for rows in recipe_runs)
    base_micro = mean(rows["latent_mean"]["micro_auc"] for rows in recipe_runs)
    targets[recipe] = {"mean_online": round(online, 4), "mean_micro": round(micro, 4),
                       "mean_micro_latent_mean": round(base_micro, 4),
                       "met": online >= 0.90 and micro >= base_micro}
  return {"online_wins": online_wins, "mean_micro_change": round(micro_change, 4),
          "adopt": adopt, "flow_scale": scale, "targets": targets}


def auc_tables(auc) -> str:
  runs = auc["runs"]
  names = ["latent_mean"] + list(auc["variants"])
  lines = ["| model | score | micro | macro | online | EER |", "|---|---|---|---|---|---|"]
  for run, rows in runs.items():
    for name in names:
      row = rows[name]
      lines.append(f"| {run} | {name} | " + " | ".join(f"{row[m]:.3f}" for m in METRICS) + " |")
  lines += ["", "Means over the three seeds of each recipe:", "",
            "| recipe | score | micro | macro | online | EER |", "|---|---|---|---|---|---|"]
  for recipe in RECIPES:
    recipe_runs = [rows for run, rows in runs.items() if recipe_of(run) == recipe]
    for name in names:
      lines.append(f"| {recipe} | {name} | " + " | ".join(
          f"{mean(rows[name][m] for rows in recipe_runs):.3f}" for m in METRICS) + " |")
  return "\n".join(lines)


def events_table(folder: str) -> str:
  lines = ["| model | score | controls | intervals found | alarms | false alarms | "
           "delay mean (median) |", "|---|---|---|---|---|---|---|"]
  for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
    with open(path) as f:
      result = json.load(f)
    run, score = os.path.basename(path)[:-5].rsplit("_", 2)[0], "_".join(
        os.path.basename(path)[:-5].rsplit("_", 2)[1:])
    for setting, entry in result["runs"].items():
      test = entry["test"]
      lines.append(f"| {run} | {score} | {setting} | {test['num_found']} / "
                   f"{test['num_intervals']} | {test['num_alarms']} | "
                   f"{test['num_false_alarms']} | {test['mean_delay_s']:.1f} s "
                   f"({test['median_delay_s']:.1f} s) |")
  return "\n".join(lines)


def main(argv):
  del argv
  with open(os.path.join(FLAGS.results, "auc.json")) as f:
    auc = json.load(f)
  candidate = auc["candidate"]
  gain = auc["variants"][candidate][0]
  scales = {name: value for name, (g, value) in auc["variants"].items()
            if g == gain and isinstance(value, (int, float))}
  print(auc_tables(auc))
  print()
  print(events_table(os.path.join(FLAGS.results, "events")))
  print()
  print("Verdict (RULE.md):", json.dumps(verdict(auc["runs"], candidate, scales), indent=1))


if __name__ == "__main__":
  app.run(main)
