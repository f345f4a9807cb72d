"""RULE.md's decision, as table.verdict computes it, on hand-made results."""

from experiments.motion_evidence import table


def _row(micro, online):
  return {"micro_auc": micro, "online_auc": online}


def _runs(candidate_rows, half_rows):
  base = [_row(0.90, 0.85), _row(0.91, 0.86)]
  return {f"{recipe}_s{i}": {"latent_mean": base[i], "a4@1": candidate_rows[i],
                             "a4@0.5": half_rows[i]}
          for recipe in table.RECIPES for i in range(2)}


def test_adopted_when_online_wins_everywhere_and_micro_loses_little():
  runs = _runs([_row(0.897, 0.88), _row(0.907, 0.87)], [_row(0.898, 0.879), _row(0.906, 0.87)])
  result = table.verdict(runs, "a4@1", {"a4@1": 1.0, "a4@0.5": 0.5})
  # Micro: -0.003 on both models of both recipes.
  assert result["adopt"] and result["mean_micro_change"] == -0.003
  # Half resolution is within 0.005 of full on both means: it is the default.
  assert result["flow_scale"] == 0.5
  assert not result["targets"]["camera"]["met"]  # Online 0.875 < 0.90.


def test_not_adopted_when_one_model_loses_online_or_micro_drops_more():
  one_loss = _runs([_row(0.95, 0.95), _row(0.95, 0.86)], [_row(0.95, 0.95)] * 2)
  assert not table.verdict(one_loss, "a4@1", {"a4@1": 1.0})["adopt"]
  micro_drop = _runs([_row(0.894, 0.95), _row(0.904, 0.95)], [_row(0.9, 0.95)] * 2)
  result = table.verdict(micro_drop, "a4@1", {"a4@1": 1.0})
  assert not result["adopt"] and result["mean_micro_change"] == -0.006
  assert result["flow_scale"] == 1.0
