"""The maths of scripts/spatial_score_ablation.py against hand-computed values."""

import importlib.util
import os

import numpy as np

_PATH = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "spatial_score_ablation.py")
_SPEC = importlib.util.spec_from_file_location("spatial_score_ablation", _PATH)
spatial = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(spatial)


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
