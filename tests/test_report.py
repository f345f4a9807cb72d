"""Evaluation artefacts: CSV and JSON round-trips, PNG output, anomalous spans."""

import csv
import json

import numpy as np
import pytest

from daml_tf.evaluation import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _video(name, first_frame, scores, labels):
  scores = np.asarray(scores)
  span = scores.max() - scores.min()
  return report.VideoScores(
      name=name,
      frame_indices=np.arange(first_frame, first_frame + scores.size),
      scores=scores,
      normalized=(scores - scores.min()) / span if span else np.zeros(scores.size),
      labels=np.asarray(labels))


class TestAnomalousSpans:

  @pytest.mark.parametrize("labels, expected", [
      ([0, 0, 0], []),
      ([], []),
      ([1, 1, 1], [(0, 3)]),
      ([0, 1, 1, 0, 0, 1, 0], [(1, 3), (5, 6)]),
      ([1, 0, 0, 1, 1], [(0, 1), (3, 5)]),  # Runs touching both ends of the video.
      ([True, False, True], [(0, 1), (2, 3)]),
  ])
  def test_spans(self, labels, expected):
    assert report.anomalous_spans(np.array(labels)) == expected


class TestVideoScores:

  def test_length_mismatch_rejected(self):
    with pytest.raises(ValueError, match="differ in length"):
      report.VideoScores("v", np.arange(3), np.zeros(3), np.zeros(3), np.zeros(2))


class TestScoresCsv:

  def test_header_rows_and_round_trip(self, tmp_path):
    first = _video("Test001", 4, np.array([0.1, 0.7, 0.30000001, 1e-7], np.float32),
                   [0, 1, 1, 0])
    second = _video("Test002", 4, np.array([1 / 3, 2 / 3, 5.0]), [0, 0, 1])
    path = tmp_path / "eval" / "scores.csv"  # The missing folder is created.
    report.write_scores_csv(str(path), [first, second])

    with open(path, newline="") as f:
      reader = csv.reader(f)
      header = next(reader)
      rows = list(reader)
    assert header == ["video", "frame", "score", "normalized_score", "label"]
    assert len(rows) == 7
    assert [row[0] for row in rows] == ["Test001"] * 4 + ["Test002"] * 3
    for video, video_rows in ((first, rows[:4]), (second, rows[4:])):
      assert [int(row[1]) for row in video_rows] == video.frame_indices.tolist()
      # Exact equality: the written digits must reproduce the very same values.
      np.testing.assert_array_equal(
          np.array([float(row[2]) for row in video_rows], video.scores.dtype), video.scores)
      np.testing.assert_array_equal(
          np.array([float(row[3]) for row in video_rows], video.normalized.dtype),
          video.normalized)
      assert [int(row[4]) for row in video_rows] == video.labels.tolist()


class TestMetricsJson:

  def test_round_trip_with_nan_and_config(self, tmp_path):
    path = tmp_path / "metrics.json"
    metrics = {"micro_auc": np.float64(0.875), "macro_auc": float("nan"), "eer": 0.25,
               "num_scored_frames": np.int64(12)}
    config = {"eval": {"normalize": "per_video", "plots": True}, "data": {"dataset": "ped2"}}
    report.write_metrics_json(str(path), metrics, config)

    text = path.read_text()
    assert "NaN" not in text  # Strict JSON parsers reject the NaN token.
    document = json.loads(text)
    assert document == {"micro_auc": 0.875, "macro_auc": None, "eer": 0.25,
                        "num_scored_frames": 12, "config": config}
    assert text == json.dumps(document, indent=2, sort_keys=True) + "\n"

  def test_config_key_in_metrics_rejected(self, tmp_path):
    with pytest.raises(ValueError, match="config"):
      report.write_metrics_json(str(tmp_path / "m.json"), {"config": 1}, {})


class TestPlot:

  def test_writes_valid_png(self, tmp_path):
    all_labels = np.array([0] * 6 + [1] * 5 + [0] * 4 + [1] * 3)  # Anomalous at the end too.
    scores = np.linspace(0.0, 1.0, all_labels.size - 4)
    video = _video("Test007", 4, scores, all_labels[4:])
    path = tmp_path / "plots" / "Test007.png"
    report.plot_video_scores(str(path), video, all_labels)
    assert path.read_bytes().startswith(PNG_SIGNATURE)

  def test_single_class_video_plots_without_auc(self, tmp_path):
    all_labels = np.zeros(10, np.int64)
    video = _video("normal_only", 2, np.arange(8.0), all_labels[2:])
    path = tmp_path / "normal_only.png"
    report.plot_video_scores(str(path), video, all_labels)
    assert path.read_bytes().startswith(PNG_SIGNATURE)

  def test_frame_index_outside_labels_rejected(self, tmp_path):
    video = _video("short", 5, np.arange(6.0), np.zeros(6))
    with pytest.raises(ValueError, match="outside"):
      report.plot_video_scores(str(tmp_path / "short.png"), video, np.zeros(8))
