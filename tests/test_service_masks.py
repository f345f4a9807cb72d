"""Zone masks on the latent grid and the frame, against hand-made cases."""

import numpy as np
import pytest

from daml_tf.service import config
from daml_tf.service import masks

TOP_LEFT_QUARTER = config.parse_polygon("0,0,0.5,0,0.5,0.5,0,0.5")


def test_top_left_quarter_of_a_4x6_grid():
  weights = masks.cell_mask([TOP_LEFT_QUARTER], (4, 6))
  expected = np.ones((4, 6), np.float32)
  expected[0:2, 0:3] = 0
  assert weights.dtype == np.float32
  np.testing.assert_array_equal(weights, expected)


def test_no_polygons_keeps_everything_and_the_whole_frame_masks_everything():
  np.testing.assert_array_equal(masks.cell_mask([], (3, 5)), np.ones((3, 5)))
  whole = config.parse_polygon("0,0,1,0,1,1,0,1")
  np.testing.assert_array_equal(masks.cell_mask([whole], (3, 5)), np.zeros((3, 5)))


def test_triangle_and_union_of_polygons():
  # The triangle below the diagonal from (0, 0) to (1, 1) (y grows downwards) masks the cells
  # whose centre has y > x; centres (x: 1/8, 3/8, 5/8, 7/8; y: 1/6, 1/2, 5/6) are off the
  # diagonal. The strip masks the last column.
  triangle = config.parse_polygon("0,0,1,1,0,1")
  right_strip = config.parse_polygon("0.75,0,1,0,1,1,0.75,1")
  weights = masks.cell_mask([triangle, right_strip], (3, 4))
  expected = np.array([
      [0, 1, 1, 0],
      [0, 0, 1, 0],
      [0, 0, 0, 0],
  ], np.float32)
  np.testing.assert_array_equal(weights, expected)


def test_concave_polygon():
  # A U shape over a 3x3 grid: the notch (x 0.34-0.66, y 0-0.66) keeps the top and middle
  # cells of the middle column.
  u_shape = config.parse_polygon("0,0,0.34,0,0.34,0.66,0.66,0.66,0.66,0,1,0,1,1,0,1")
  expected = np.zeros((3, 3), np.float32)
  expected[0:2, 1] = 1
  np.testing.assert_array_equal(masks.cell_mask([u_shape], (3, 3)), expected)


def test_pixel_mask_is_true_where_masked():
  pixels = masks.pixel_mask([TOP_LEFT_QUARTER], (4, 6))
  assert pixels.dtype == bool
  np.testing.assert_array_equal(pixels, masks.cell_mask([TOP_LEFT_QUARTER], (4, 6)) == 0)
  big = masks.pixel_mask([TOP_LEFT_QUARTER], (480, 640))
  assert big[:240, :320].all() and not big[240:].any() and not big[:, 320:].any()


def test_masked_mean():
  error = np.arange(6, dtype=np.float32).reshape(2, 3)
  weights = np.array([[1, 0, 1], [0, 0, 1]], np.float32)
  assert masks.masked_mean(error, weights) == pytest.approx((0 + 2 + 5) / 3)
  assert masks.masked_mean(error, np.ones((2, 3))) == pytest.approx(error.mean())
  assert masks.masked_mean(error, np.zeros((2, 3))) == 0.0
  # Channels and a batch: the plain mean with all weights 1, one value per example.
  batch = np.random.default_rng(0).random((2, 2, 3, 4))
  np.testing.assert_allclose(masks.masked_mean(batch, np.ones((2, 3))),
                             batch.mean(axis=(1, 2, 3)))
  np.testing.assert_allclose(masks.masked_mean(batch, weights),
                             (batch.mean(-1) * weights).sum(axis=(1, 2)) / 3)
  with pytest.raises(ValueError, match="does not fit"):
    masks.masked_mean(error, np.ones((3, 2)))
