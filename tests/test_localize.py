"""daml_tf.localize: the error map upsampled to the frame, the anomaly box, the
heatmap; checked against hand-made maps."""

import numpy as np
import pytest

from daml_tf import localize


def test_upsample_gives_each_pixel_its_cell():
  error_map = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
  heat = localize.upsample(error_map, 4, 6)
  np.testing.assert_array_equal(heat, np.repeat(np.repeat(error_map, 2, 0), 2, 1))
  # A size that is not a multiple: every cell still covers its share of the frame.
  heat = localize.upsample(error_map, 5, 7)
  assert heat.shape == (5, 7) and heat.dtype == np.float32
  np.testing.assert_array_equal(np.unique(heat), error_map.ravel())


def test_box_of_a_single_hot_cell_is_that_cell_scaled_to_the_frame():
  error_map = np.zeros((4, 6), np.float32)
  error_map[1, 4] = 3.0
  # Cells are 10x8 pixels on a 40x48 frame: cell (row 1, col 4) spans x 32..40, y 10..20.
  assert localize.anomaly_box(error_map, (40, 48)) == (32, 10, 40, 20)


def test_box_holds_the_component_of_the_max_not_other_hot_regions():
  error_map = np.full((6, 8), 0.1, np.float32)
  error_map[1:3, 1:4] = [[0.6, 0.7, 0.6], [0.8, 1.0, 0.55]]  # the peak's region
  error_map[3, 4] = 0.6  # diagonal neighbour of (2, 3): joins with the 8-neighbourhood
  error_map[5, 7] = 0.9  # hot, but apart from the peak's region
  box = localize.anomaly_box(error_map, (60, 80))  # 10x10-pixel cells
  assert box == (10, 10, 50, 40)
  # A higher fraction keeps only the cells at >= 0.75 of the max around the peak.
  assert localize.anomaly_box(error_map, (60, 80), fraction=0.75) == (10, 20, 30, 30)


def test_box_on_frame_sizes_that_are_not_multiples_covers_whole_pixels():
  error_map = np.zeros((3, 3), np.float32)
  error_map[2, 2] = 1.0
  # Cell (2, 2) of a 3x3 grid on a 10x10 frame starts at 20 / 3 -> pixel 6, ends at 10.
  assert localize.anomaly_box(error_map, (10, 10)) == (6, 6, 10, 10)
  assert localize.anomaly_box(np.ones((3, 3)), (10, 10)) == (0, 0, 10, 10)


def test_no_box_on_a_flat_zero_map_and_errors_on_bad_input():
  assert localize.anomaly_box(np.zeros((2, 2)), (8, 8)) is None
  with pytest.raises(ValueError, match=r"\[h, w\]"):
    localize.anomaly_box(np.zeros((2, 2, 1)), (8, 8))
  with pytest.raises(ValueError, match="fraction"):
    localize.anomaly_box(np.ones((2, 2)), (8, 8), fraction=0)


def test_heatmap_overlay_reddens_only_the_hot_cells():
  frame = np.full((4, 4, 1), 100, np.uint8)
  error_map = np.array([[0, 0], [0, 2]], np.float32)
  out = localize.heatmap_overlay(frame, error_map, scale=2.0, opacity=0.5)
  assert out.shape == (4, 4, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[:2, :2], 100)
  np.testing.assert_array_equal(out[2:, 2:], [[[178, 50, 50]] * 2] * 2)
  # Without a scale the map's own maximum is fully red.
  np.testing.assert_array_equal(localize.heatmap_overlay(frame, error_map, opacity=0.5), out)


def test_annotate_draws_heatmap_box_caption_and_banner():
  frame = np.full((40, 60, 1), 90, np.uint8)
  error_map = np.zeros((4, 6), np.float32)
  error_map[1, 2] = 1.0  # cell (1, 2): x 20..30, y 10..20
  out = localize.annotate(frame, error_map, "score 1", box_color=localize.RED)
  assert out.shape == (40, 60, 3) and out.dtype == np.uint8
  # The hot cell is reddened inside, its box drawn in the box colour on its edge.
  assert tuple(out[15, 25]) == tuple(localize.heatmap_overlay(frame, error_map)[15, 25])
  assert tuple(out[10, 25]) == localize.RED and tuple(out[15, 20]) == localize.RED
  # A dark caption strip at the bottom holding white text; the top stays as it was.
  strip = out[-6:, :30]
  assert (strip == 0).all(axis=-1).any() and (strip > 150).all(axis=-1).any()
  assert (out[:5, :] == 90).all()
  yellow = localize.annotate(frame, error_map, "x")
  assert tuple(yellow[10, 25]) == localize.YELLOW
  # A banner: a red strip at the top and a red border; no map: no heatmap, no box.
  banner = localize.annotate(frame, None, "warming up", banner="ALARM")
  assert tuple(banner[1, 30]) == (220, 0, 0) and tuple(banner[30, 0]) == (220, 0, 0)
  assert (banner[16:22, 5:55] == 90).all()
