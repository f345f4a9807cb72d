"""The maths of experiments/ped2_accuracy/spatial_score_ablation.py against hand-computed values."""

import os

import numpy as np

from experiments.ped2_accuracy import spatial_score_ablation as spatial


def test_top_mean_averages_the_largest_share_of_cells():
  maps = np.array([[[1.0, 2.0], [3.0, 4.0]]])
  np.testing.assert_allclose(spatial.top_mean(maps, 0.5), [3.5])
  # At least one cell, however small the share.
  np.testing.assert_allclose(spatial.top_mean(maps, 0.01), [4.0])


def test_knn_local_map_looks_only_at_neighbouring_places():
  # One training frame, a 1x2 grid of 1-D vectors: 0 on the left, 10 on the right.
  train = np.array([[[[0.0], [10.0]]]], np.float32)
  test = np.array([[[[9.0], [9.0]]]], np.float32)
  # Its own place only: the left cell is 9 away from 0, the right 1 away from 10.
  np.testing.assert_allclose(spatial.knn_local_map(train, test, radius=0, stride=1),
                             [[[81.0, 1.0]]])
  # With the neighbours, the left cell finds the 10 next to it.
  np.testing.assert_allclose(spatial.knn_local_map(train, test, radius=1, stride=1),
                             [[[1.0, 1.0]]])


def test_blob_max_mean_ignores_blobs_under_the_minimum_size():
  error = np.array([[[1.0, 1.0, 0.0, 9.0],
                     [1.0, 3.0, 0.0, 0.0]]])
  mask = np.array([[[True, True, False, True],
                    [True, True, False, False]]])
  # The 4-cell blob has mean 1.5; the lone cell of error 9 is too small to count.
  np.testing.assert_allclose(spatial.blob_max_mean(error, mask, min_cells=4), [1.5])
  np.testing.assert_allclose(spatial.blob_max_mean(error, mask, min_cells=1), [9.0])
  np.testing.assert_allclose(spatial.blob_max_mean(error, ~np.ones_like(mask)), [0.0])


def test_pooled_code_error_averages_the_difference_before_squaring():
  predicted = np.zeros((1, 2, 2, 1), np.float32)
  # A misplacement: +1 in one cell, -1 in its neighbour; 3 in one cell of another frame.
  observed = np.array([[[[1.0], [-1.0]], [[0.0], [0.0]]]], np.float32)
  np.testing.assert_allclose(spatial.pooled_code_error(predicted, observed, 1), [0.5])
  np.testing.assert_allclose(spatial.pooled_code_error(predicted, observed, 2), [0.0])
  observed = np.array([[[[3.0], [0.0]], [[0.0], [0.0]]]], np.float32)
  np.testing.assert_allclose(spatial.pooled_code_error(predicted, observed, 2), [0.5625])


def test_relative_sse_divides_by_the_distance_to_the_mean_code():
  predicted = np.full((1, 1, 2, 1), 1.0)
  observed = np.array([[[[2.0], [3.0]]]])
  # Errors 1 + 4 = 5 over distances to the mean code 1: (2-1)^2 + (3-1)^2 = 5.
  np.testing.assert_allclose(spatial.relative_sse(predicted, observed, np.ones((1, 2, 1))), [1.0])


def test_standardised_sum_uses_the_training_statistics():
  train_parts = [np.array([1.0, 3.0]), np.array([10.0, 30.0])]
  test_parts = [np.array([4.0]), np.array([10.0])]
  # (4 - 2) / 1 + (10 - 20) / 10 = 1.
  np.testing.assert_allclose(spatial.standardised_sum(train_parts, test_parts), [1.0])


def test_row_ratio_map_scales_each_row_by_its_training_error():
  # Training errors: row 0 averages 1, row 1 averages 3; overall 2.
  train = np.array([[[0.0, 2.0], [3.0, 3.0]]])
  test = np.array([[[2.0, 2.0], [6.0, 0.0]]])
  np.testing.assert_allclose(spatial.row_ratio_map(train, test, 0.0), [[[2.0, 2.0], [2.0, 0.0]]])
  # A floor of half the overall mean adds 1 to every row's scale.
  np.testing.assert_allclose(spatial.row_ratio_map(train, test, 0.5), [[[1.0, 1.0], [1.5, 0.0]]])
