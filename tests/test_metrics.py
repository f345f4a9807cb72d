"""Hand-computed checks of score normalisation, AUC and EER."""

import numpy as np
import pytest

from daml_tf import metrics


class TestNormalizeScores:

  def test_per_video_min_max(self):
    np.testing.assert_allclose(metrics.normalize_scores(np.array([2, 4, 6]), "per_video"),
                               [0.0, 0.5, 1.0])

  def test_constant_video_is_all_zeros_not_nan(self):
    normalized = metrics.normalize_scores(np.full(5, 3.7), "per_video")
    np.testing.assert_array_equal(normalized, np.zeros(5))

  def test_empty_video(self):
    assert metrics.normalize_scores(np.zeros((0,)), "per_video").shape == (0,)

  def test_none_returns_float64_copy(self):
    raw = np.array([1.5, -2.0, 7.0], dtype=np.float32)
    unchanged = metrics.normalize_scores(raw, "none")
    assert unchanged.dtype == np.float64
    np.testing.assert_array_equal(unchanged, raw)
    unchanged[0] = 100.0
    assert raw[0] == 1.5

  def test_unknown_mode(self):
    with pytest.raises(ValueError, match="per_video"):
      metrics.normalize_scores(np.array([1.0, 2.0]), "global")

  def test_nan_scores_rejected(self):
    with pytest.raises(ValueError, match="NaN"):
      metrics.normalize_scores(np.array([1.0, np.nan]), "per_video")


class TestMicroAuc:

  def test_hand_computed_with_a_tie(self):
    # Negatives {0, 1}, positives {1, 2}: of the 4 positive/negative pairs, 3 are ordered
    # correctly and (1, 1) is a tie worth 1/2, so AUC = 3.5 / 4.
    scores = [np.array([0.0, 1.0]), np.array([1.0, 2.0])]
    labels = [np.array([0, 0]), np.array([1, 1])]
    assert metrics.micro_auc(scores, labels) == pytest.approx(0.875)

  def test_pools_frames_across_videos(self):
    scores = [np.array([0.0, 1.0]), np.array([1.0, 2.0])]
    labels = [np.array([0, 0]), np.array([1, 1])]
    pooled = metrics.micro_auc(np.array([0.0, 1.0, 1.0, 2.0]), np.array([0, 0, 1, 1]))
    assert metrics.micro_auc(scores, labels) == pytest.approx(pooled)

  def test_per_video_normalisation_changes_micro_auc(self):
    # Video A is normal but sits at a higher score offset than video B's anomaly.
    scores = [np.array([10.0, 11.0, 12.0]), np.array([0.0, 1.0, 2.0])]
    labels = [np.array([0, 0, 1]), np.array([0, 0, 1])]
    # Raw: positives {12, 2}, negatives {10, 11, 0, 1}. 12 beats all 4 negatives, 2 beats only
    # 0 and 1: 6 of 8 pairs.
    raw = metrics.evaluate_scores(scores, labels, normalize="none")
    assert raw["micro_auc"] == pytest.approx(6 / 8)
    # Per video both become [0, .5, 1] with the anomaly at 1: all 8 pairs correct.
    normalized = metrics.evaluate_scores(scores, labels, normalize="per_video")
    assert normalized["micro_auc"] == pytest.approx(1.0)
    # Within each video the ranking is perfect either way, so macro AUC does not move.
    assert raw["macro_auc"] == normalized["macro_auc"] == pytest.approx(1.0)

  @pytest.mark.parametrize("label", [0, 1])
  def test_one_class_raises(self, label):
    with pytest.raises(ValueError, match="both normal and anomalous"):
      metrics.micro_auc([np.array([0.1, 0.2]), np.array([0.3])],
                        [np.full(2, label), np.full(1, label)])

  def test_length_mismatch_raises(self):
    with pytest.raises(ValueError, match="Video 1"):
      metrics.micro_auc([np.array([0.1, 0.2]), np.array([0.3])],
                        [np.array([0, 1]), np.array([0, 1])])

  def test_non_binary_labels_raise(self):
    with pytest.raises(ValueError, match="0 .normal. or 1"):
      metrics.micro_auc(np.array([0.1, 0.2]), np.array([0, 2]))


class TestMacroAuc:

  def test_skips_single_class_video(self):
    # Video 0: negatives {0, 2}, positive {1}: 1 of 2 pairs correct -> 0.5.
    # Video 1: perfectly ranked -> 1.0. Video 2: all normal, no AUC, skipped.
    scores = [np.array([0.0, 1.0, 2.0]), np.array([0.0, 5.0]), np.array([9.0, 9.5])]
    labels = [np.array([0, 1, 0]), np.array([0, 1]), np.array([0, 0])]
    assert metrics.macro_auc(scores, labels) == pytest.approx(0.75)

  def test_nan_when_no_video_has_both_classes(self):
    scores = [np.array([0.0, 1.0]), np.array([2.0])]
    labels = [np.array([0, 0]), np.array([1])]
    assert np.isnan(metrics.macro_auc(scores, labels))

  def test_video_auc_nan_for_one_class(self):
    assert np.isnan(metrics.video_auc(np.array([0.1, 0.2]), np.array([1, 1])))


class TestEqualErrorRate:

  def test_perfectly_separable_is_zero(self):
    assert metrics.equal_error_rate(np.array([0.0, 1.0, 2.0, 3.0]),
                                    np.array([0, 0, 1, 1])) == pytest.approx(0.0)

  def test_perfectly_inverted_is_one(self):
    assert metrics.equal_error_rate(np.array([3.0, 2.0, 1.0, 0.0]),
                                    np.array([0, 0, 1, 1])) == pytest.approx(1.0)

  def test_crossing_on_a_vertical_roc_segment(self):
    # Negatives {1, 2, 3}, positives {2.5, 4}. ROC points (fpr, tpr) by falling threshold:
    # (0, 0), (0, 1/2) at 4, (1/3, 1/2) at 3, (1/3, 1) at 2.5, (2/3, 1), (1, 1).
    # fpr - fnr goes -1/6 -> +1/3 between (1/3, 1/2) and (1/3, 1); fpr is 1/3 all along, and
    # fnr falls from 1/2 through 1/3, so the rates meet at 1/3.
    scores = np.array([1.0, 2.0, 3.0, 2.5, 4.0])
    labels = np.array([0, 0, 0, 1, 1])
    assert metrics.equal_error_rate(scores, labels) == pytest.approx(1 / 3)

  def test_crossing_interpolated_on_a_diagonal_roc_segment(self):
    # Negatives {0, 1}, positives {1, 2}. ROC points: (0, 0), (0, 1/2) at 2, then the tie at 1
    # moves both rates at once to (1/2, 1), then (1, 1). On the segment
    # (0, 1/2) -> (1/2, 1): fpr = t/2 and fnr = (1 - t)/2, equal at t = 1/2, so EER = 1/4.
    scores = [np.array([0.0, 1.0]), np.array([1.0, 2.0])]
    labels = [np.array([0, 0]), np.array([1, 1])]
    assert metrics.equal_error_rate(scores, labels) == pytest.approx(0.25)

  def test_one_class_raises(self):
    with pytest.raises(ValueError, match="EER"):
      metrics.equal_error_rate(np.array([0.1, 0.2]), np.array([0, 0]))


class TestEvaluateScores:

  def test_keys_and_frame_count(self):
    scores = [np.array([0.0, 1.0, 2.0]), np.array([4.0, 4.0])]
    labels = [np.array([0, 0, 1]), np.array([1, 0])]
    result = metrics.evaluate_scores(scores, labels, normalize="per_video")
    assert set(result) == {"micro_auc", "macro_auc", "eer", "num_scored_frames"}
    assert result["num_scored_frames"] == 5
    assert isinstance(result["num_scored_frames"], int)
    # Normalised: video 0 -> [0, .5, 1], constant video 1 -> [0, 0]. Positives {1, 0},
    # negatives {0, .5, 0}: 1 beats all 3; 0 ties two zeros (2 * 1/2): 4 of 6 pairs.
    assert result["micro_auc"] == pytest.approx(4 / 6)
    # Video 0 is perfect (1.0); video 1 is a tie (0.5).
    assert result["macro_auc"] == pytest.approx(0.75)

  def test_unknown_normalize_mode(self):
    with pytest.raises(ValueError, match="Unknown normalisation mode"):
      metrics.evaluate_scores([np.array([0.0, 1.0])], [np.array([0, 1])], normalize="minmax")

  def test_one_class_raises(self):
    with pytest.raises(ValueError, match="both normal and anomalous"):
      metrics.evaluate_scores([np.array([0.0, 1.0])], [np.array([0, 0])],
                              normalize="per_video")
