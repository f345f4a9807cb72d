"""Zone masks: polygons of the frame that are not scored (a road, a tree in the wind).

A polygon is ((x, y), ...) relative to the frame, 0-1 (x to the width, y to the height), as
config.parse_polygon gives it. The score of a frame is a mean over the cells of the latent grid
(a model's code is [h, w, c] for a frame of [H, W]); a masked cell is left out of that mean:
`cell_mask` gives each cell's weight and `masked_mean` the weighted mean. `pixel_mask` is the
same test at the frame's resolution, for drawing the zones.

A cell (or pixel) is masked when its centre is inside a polygon (even-odd rule, so a polygon
crossing itself leaves its doubly wound parts out); a centre exactly on an edge may fall on
either side.
"""

from typing import Iterable, Sequence, Tuple

import numpy as np

Point = Tuple[float, float]
Polygon = Sequence[Point]


def _inside(polygon: Polygon, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Whether each point (x, y) is inside the polygon (even-odd rule), as a bool array."""
  inside = np.zeros(np.broadcast(x, y).shape, dtype=bool)
  vertices = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
  for (x0, y0), (x1, y1) in zip(vertices, np.roll(vertices, -1, axis=0)):
    # The edge crosses the horizontal line through the point (counting the lower end in and
    # the upper one out, so a vertex on that line is crossed once)...
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
      x_cross = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    # ...to the right of the point: one more crossing of the ray going right.
    inside ^= crosses & (x < x_cross)
  return inside


def _masked(polygons: Iterable[Polygon], height: int, width: int) -> np.ndarray:
  """[height, width] bool: True where the centre of the cell is inside a polygon."""
  y = ((np.arange(height, dtype=np.float64) + 0.5) / height)[:, None]
  x = ((np.arange(width, dtype=np.float64) + 0.5) / width)[None, :]
  masked = np.zeros((height, width), dtype=bool)
  for polygon in polygons:
    masked |= _inside(polygon, x, y)
  return masked


def cell_mask(polygons: Iterable[Polygon], grid_hw: Tuple[int, int]) -> np.ndarray:
  """[gh, gw] float32 weights of the latent grid's cells: 1 kept, 0 masked (its centre inside a
  polygon). No polygons: all ones."""
  height, width = (int(size) for size in grid_hw)
  if height <= 0 or width <= 0:
    raise ValueError(f"grid_hw must be positive, got {tuple(grid_hw)}")
  return (~_masked(polygons, height, width)).astype(np.float32)


def pixel_mask(polygons: Iterable[Polygon], frame_hw: Tuple[int, int]) -> np.ndarray:
  """[h, w] bool: True where a pixel is masked (inside a polygon), the area to draw over.
  Note it is the opposite sense of cell_mask's weights."""
  height, width = (int(size) for size in frame_hw)
  if height <= 0 or width <= 0:
    raise ValueError(f"frame_hw must be positive, got {tuple(frame_hw)}")
  return _masked(polygons, height, width)


def masked_mean(error_map: np.ndarray, weights: np.ndarray):
  """sum(weights * error) / sum(weights) over the grid; 0.0 when every cell is masked.

  Args:
    error_map: [gh, gw] or [gh, gw, c] (a float is returned), or [b, gh, gw, c] (a [b] float64
      array: one mean per example). Channels are averaged with equal weight, so with all
      weights 1 this is the plain mean (the latent_mean score).
    weights: [gh, gw] (cell_mask).
  """
  error = np.asarray(error_map, dtype=np.float64)
  weights = np.asarray(weights, dtype=np.float64)
  if error.ndim == 2:
    error = error[..., None]
  if error.ndim not in (3, 4) or error.shape[-3:-1] != weights.shape:
    raise ValueError(f"error_map {error.shape} does not fit weights {weights.shape}: expected "
                     "[gh, gw], [gh, gw, c] or [b, gh, gw, c] with weights [gh, gw]")
  total = weights.sum()
  per_cell = error.mean(axis=-1)  # [..., gh, gw]
  if total <= 0:
    return 0.0 if per_cell.ndim == 2 else np.zeros(per_cell.shape[0])
  means = (per_cell * weights).sum(axis=(-2, -1)) / total
  return float(means) if per_cell.ndim == 2 else means
