"""The embedded default dataset: a generated fixed-camera walkway scene with labelled anomalies.

A newcomer can train and evaluate without downloading anything:

  python -m daml_tf.data.synthetic --output_dir=data/synthetic

writes, deterministically from `--seed`, the frames layout every loader of the package reads:

  DIR/training/frames/01/000.png ...   normal activity only
  DIR/testing/frames/01/000.png ...    normal activity plus anomalous spans
  DIR/synthetic.npz                    one uint8 0/1 array per test video, keyed "01", "02", ...

The scene is one static campus view (buildings with a door, a sidewalk along them, two gravel
paths across a lawn leading to the door) with sensor noise and a slow brightness drift. Normal
activity is pedestrians walking at 0.6-1.3 px/frame (at the 64x96 model resolution) along the
paths in both directions, alone or in groups of two to four, sometimes pausing, entering and
leaving through the frame edges and the door. The background crowd drifts between one and seven
walkers and groups come on top of it (up to ten people), so the amount of motion in a normal
frame varies a lot. Each test video holds anomalous events of one of three kinds, rotating over
the videos:

  fast     a runner or cyclist at 4-6x pedestrian speed along the sidewalk, twice in a row;
  offpath  a pedestrian crossing the lawn off the paths, across their direction;
  cart     a wide cart (about 3x a pedestrian's area) driven along the sidewalk.

A frame is labelled anomalous while an anomalous object is visible in it (at least 10% of its
box inside the frame); about 40% of the test frames are. Because the crowd of normal footage
spans much of the motion energy the anomalies add, a pixel-difference score stays a weak
detector (`pixel_difference_auc`, about 0.6-0.75 micro AUC depending on the seed).

Library code calls `generate`; the entry point is `main` after `define_flags`.
"""

import dataclasses
import glob
import math
import os
import shutil
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging
import numpy as np
from PIL import Image

LABEL_FILE = "synthetic.npz"
DEFAULT_HEIGHT = 120
DEFAULT_WIDTH = 180
MIN_FRAMES_PER_VIDEO = 20
ANOMALY_KINDS = ("fast", "offpath", "cart")

# Speeds are specified at the model resolution of the registry (64 rows) and scaled to the
# written height, so the motion the model sees does not depend on --height.
_MODEL_HEIGHT = 64.0
_WALKER_SPEED = (0.6, 1.3)  # Model px/frame.
_FAST_FACTOR = (4.0, 6.0)  # Times the mean walker speed.
_CART_SPEED = (1.2, 1.7)
_OFFPATH_SPEED = (0.7, 1.2)
# Background crowd drifting between these counts, plus groups arriving now and then.
_MIN_WALKERS = 1
_BASE_MAX_WALKERS = 7
_GROUP_RATE = 1 / 40  # Per frame.
_MAX_GROUP = 4
_MAX_WALKERS = 10
_DENSITY_PERIODS = (30, 80)  # Frames.
_ARRIVAL_PROBABILITY = 0.35  # Per frame while the background crowd is below its target.
_PAUSE_PROBABILITY = 0.25
_PAUSE_FRAMES = (10, 50)
# Sidewalk left-right, right-left, lawn path B up and down, lawn path C up and down.
_ROUTE_WEIGHTS = (0.2, 0.2, 0.15, 0.15, 0.15, 0.15)
_FAST_PASSES = 2  # Fast objects per event, one after the other.
_CYCLIST_PROBABILITY = 0.3
# Normal footage is simulated this many frames before frame 0 so that videos start mid-scene
# instead of empty.
_WARMUP_FRAMES = 150
_SENSOR_NOISE_STD = 2.0  # Gray levels.
_NOISE_MARGIN = 32
_VISIBLE_FRACTION = 0.1  # Of an object's box inside the frame for its frame to be labelled.

# Scene geometry as fractions of (width, height).
_BUILDING_BOTTOM = 0.30
_SIDEWALK = (0.32, 0.42)
_SIDEWALK_Y = 0.37
_DOOR = (0.62, 0.335)  # Foot position of someone standing in the doorway.
_PATH_B = ((0.12, 1.0), _DOOR)  # From the bottom edge to the door.
_PATH_C = ((1.0, 0.85), _DOOR)  # From the right edge to the door.
_PATH_HALF_WIDTH = 0.045  # Of the height.
_TREES = ((0.05, 0.55, 0.1), (0.97, 0.48, 0.09))  # x, y, radius (of the height).
_SPLIT_CODES = {"training": 1, "testing": 2}


@dataclasses.dataclass(frozen=True)
class _Route:
  """A straight line an object follows; endpoints at a frame edge or at the door."""

  start: Tuple[float, float]  # Pixels.
  end: Tuple[float, float]
  half_width: float  # Pixels of lateral spread of the foot position.
  starts_at_door: bool = False
  ends_at_door: bool = False

  def reversed(self) -> "_Route":
    return _Route(self.end, self.start, self.half_width, self.ends_at_door, self.starts_at_door)


@dataclasses.dataclass
class _Agent:
  """One moving object. Positions are foot points (bottom centre) in pixels."""

  kind: str  # "walker", "runner", "cyclist" or "cart".
  route: _Route
  speed: float  # Model px/frame at perspective scale 1.
  lateral: float  # Pixels across the route.
  size: float  # Multiplies the kind's nominal size.
  colors: Dict[str, float]
  traveled: float = 0.0  # Pixels along the route from `route.start`.
  phase: float = 0.0  # Gait phase, radians.
  pause_at: float = math.inf  # Traveled distance where a pause starts.
  pause_frames: int = 0
  direction: np.ndarray = dataclasses.field(init=False)  # Unit vector along the route.
  normal: np.ndarray = dataclasses.field(init=False)  # Unit vector across it.
  length: float = dataclasses.field(init=False)  # Pixels from start to end.

  def __post_init__(self):
    delta = np.subtract(self.route.end, self.route.start)
    self.length = float(np.hypot(delta[0], delta[1]))
    self.direction = delta / self.length
    self.normal = np.array([-self.direction[1], self.direction[0]])


class _Scene:
  """The fixed camera view: static background, routes and perspective of one dataset."""

  def __init__(self, height: int, width: int, rng: np.random.Generator):
    self.height = height
    self.width = width
    self.background = _render_background(height, width, rng)
    px = lambda point: (point[0] * width, point[1] * height)
    path_half_width = _PATH_HALF_WIDTH * height
    sidewalk = _Route((0.0, _SIDEWALK_Y * height), (float(width), _SIDEWALK_Y * height),
                      0.035 * height)
    path_b = _Route(px(_PATH_B[0]), px(_PATH_B[1]), 0.6 * path_half_width, ends_at_door=True)
    path_c = _Route(px(_PATH_C[0]), px(_PATH_C[1]), 0.6 * path_half_width, ends_at_door=True)
    self.sidewalk_routes = (sidewalk, sidewalk.reversed())
    # The sidewalk carries through traffic, the lawn paths the door traffic.
    self.normal_routes = (sidewalk, sidewalk.reversed(), path_b, path_b.reversed(), path_c,
                          path_c.reversed())
    self.normal_route_weights = np.asarray(_ROUTE_WEIGHTS)

  def scale(self, foot_y: float) -> float:
    """Apparent size of an object standing at `foot_y` (pixels): farther is smaller."""
    return 0.7 + 0.45 * min(max(foot_y / self.height, 0.0), 1.1)

  def offpath_route(self, rng: np.random.Generator) -> _Route:
    """A line across the lawn that no path follows."""
    h, w = self.height, self.width
    if rng.random() < 0.5:
      # Straight across the lawn from side to side, cutting across both lawn paths.
      y = rng.uniform(0.62, 0.88) * h
      route = _Route((0.0, y), (float(w), y), 0.0)
    else:
      # From the bottom edge between the paths diagonally up to a side edge.
      start = (rng.uniform(0.38, 0.6) * w, float(h))
      end = (float(w) if rng.random() < 0.5 else 0.0, rng.uniform(0.5, 0.62) * h)
      route = _Route(start, end, 0.0)
    return route.reversed() if rng.random() < 0.5 else route


# ------------------------------------------------------------------------------------------------
# Drawing primitives. Anti-aliased coverage keeps sub-pixel motion smooth instead of jumping
# whole pixels, which would make a slow walker flicker like a fast one.


# Pixel indices as floats, sliced instead of re-created: drawing is dominated by the per-call
# overhead of many tiny numpy operations.
_CELLS = np.arange(4096, dtype=np.float32)


def _axis_coverage(lo: float, hi: float, size: int) -> Tuple[int, Optional[np.ndarray]]:
  """(first cell, fraction of each cell inside [lo, hi)) along one axis of length `size`."""
  first = int(lo) if lo > 0 else 0  # int() is floor for positive numbers.
  last = min(int(math.ceil(hi)), size)
  if last <= first:
    return first, None
  cells = _CELLS[first:last]
  # Every cell of [floor(lo), ceil(hi)) overlaps the interval, so no clipping is needed.
  return first, np.minimum(cells + 1.0, hi) - np.maximum(cells, lo)


def _draw_rect(image: np.ndarray, x0: float, y0: float, x1: float, y1: float, value: float,
               alpha: float = 1.0) -> None:
  """Blends an axis-aligned rectangle [x0, x1) x [y0, y1) of gray `value` into `image`."""
  if alpha <= 0:
    return
  top, cover_y = _axis_coverage(y0, y1, image.shape[0])
  left, cover_x = _axis_coverage(x0, x1, image.shape[1])
  if cover_y is None or cover_x is None:
    return
  weight = cover_y[:, None] * cover_x[None, :]
  if alpha < 1:
    weight *= alpha
  region = image[top:top + cover_y.size, left:left + cover_x.size]
  region += weight * (value - region)


def _draw_ellipse(image: np.ndarray, cx: float, cy: float, rx: float, ry: float, value: float,
                  alpha: float = 1.0) -> None:
  """Blends a filled axis-aligned ellipse with a one-pixel soft edge into `image`."""
  if alpha <= 0 or rx <= 0 or ry <= 0:
    return
  top, bottom = max(int(cy - ry - 1), 0), min(int(cy + ry + 2), image.shape[0])
  left, right = max(int(cx - rx - 1), 0), min(int(cx + rx + 2), image.shape[1])
  if bottom <= top or right <= left:
    return
  ys = _CELLS[top:bottom, None] + 0.5
  xs = _CELLS[None, left:right] + 0.5
  radius = np.sqrt(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2)
  weight = np.minimum(np.maximum((1.0 - radius) * min(rx, ry) + 0.5, 0.0), 1.0) * alpha
  region = image[top:bottom, left:right]
  region += weight * (value - region)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
  """Zero-mean, unit-ish noise varying smoothly over `cell` pixels (bilinear value noise)."""
  rows = int(math.ceil(height / cell)) + 2
  cols = int(math.ceil(width / cell)) + 2
  grid = rng.standard_normal((rows, cols)).astype(np.float32)
  y = np.arange(height, dtype=np.float32) / cell
  x = np.arange(width, dtype=np.float32) / cell
  y0, x0 = y.astype(int), x.astype(int)
  fy, fx = (y - y0)[:, None], (x - x0)[None, :]
  top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
  bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
  return top * (1 - fy) + bottom * fy


def _distance_to_segment(xs: np.ndarray, ys: np.ndarray, start, end) -> np.ndarray:
  start, end = np.asarray(start, np.float32), np.asarray(end, np.float32)
  delta = end - start
  t = ((xs - start[0]) * delta[0] + (ys - start[1]) * delta[1]) / float(delta @ delta)
  t = np.clip(t, 0.0, 1.0)
  return np.hypot(xs - (start[0] + t * delta[0]), ys - (start[1] + t * delta[1]))


def _render_background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
  """The static view: sky, building facades with windows and a door, sidewalk, lawn, paths."""
  h, w = height, width
  ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
  xs = np.arange(w, dtype=np.float32)[None, :] + 0.5
  image = np.empty((h, w), np.float32)

  # Lawn everywhere first; everything else is painted over it.
  image[:] = 92 + 10 * _smooth_noise(rng, h, w, 0.15 * h) + 5 * _smooth_noise(rng, h, w, 3.0)
  image += 3 * rng.standard_normal((h, w)).astype(np.float32)

  # Sky and a skyline of facades of different height and tone.
  building_bottom = _BUILDING_BOTTOM * h
  image[:int(building_bottom)] = (205 + 6 * _smooth_noise(rng, h, w, 0.3 * h))[
      :int(building_bottom)]
  edges = np.sort(rng.uniform(0.15, 0.85, size=3)) * w
  edges = np.concatenate([[0.0], edges, [float(w)]])
  window_w, window_h = 0.045 * h, 0.05 * h
  for left, right in zip(edges[:-1], edges[1:]):
    roof = rng.uniform(0.0, 0.09) * h
    facade = rng.uniform(105, 160)
    _draw_rect(image, left, roof, right, building_bottom, facade)
    _draw_rect(image, left, roof, right, roof + 0.015 * h, facade - 35)  # Roof edge.
    _draw_rect(image, right - 1.0, roof, right, building_bottom, facade - 45)  # Corner shadow.
    pitch_x, pitch_y = rng.uniform(1.7, 2.3) * window_w, rng.uniform(1.6, 2.0) * window_h
    for wy in np.arange(roof + 0.03 * h, building_bottom - 1.3 * window_h, pitch_y):
      for wx in np.arange(left + 0.4 * pitch_x, right - window_w, pitch_x):
        glass = rng.choice([55.0, 70.0, 185.0], p=[0.45, 0.4, 0.15])
        _draw_rect(image, wx, wy, wx + window_w, wy + window_h, glass + rng.normal(0, 6))
  _draw_rect(image, 0, building_bottom - 0.02 * h, w, building_bottom, 80)  # Plinth.
  door_x, door_y = _DOOR[0] * w, _SIDEWALK[0] * h
  _draw_rect(image, door_x - 0.05 * h, door_y - 0.14 * h, door_x + 0.05 * h, door_y, 95)
  _draw_rect(image, door_x - 0.04 * h, door_y - 0.13 * h, door_x + 0.04 * h, door_y, 38)

  # Concrete sidewalk with tile seams and a darker curb.
  top, bottom = _SIDEWALK[0] * h, _SIDEWALK[1] * h
  sidewalk = 172 + 4 * _smooth_noise(rng, h, w, 0.1 * h)
  seams = (np.mod(xs, 0.12 * h) < 1.0) | (np.abs(ys - 0.5 * (top + bottom)) < 0.5)
  sidewalk = np.where(seams, sidewalk - 18, sidewalk)
  inside = (ys >= top) & (ys < bottom)
  image = np.where(inside, sidewalk, image)
  _draw_rect(image, 0, bottom - 0.015 * h, w, bottom, 125)

  # Gravel paths with soft borders across the lawn.
  gravel = 150 + 5 * _smooth_noise(rng, h, w, 2.0) + 4 * _smooth_noise(rng, h, w, 0.2 * h)
  half_width = _PATH_HALF_WIDTH * h
  for start, end in (_PATH_B, _PATH_C):
    distance = _distance_to_segment(xs, ys, (start[0] * w, start[1] * h),
                                    (end[0] * w, end[1] * h))
    weight = np.clip(half_width + 0.5 - distance, 0.0, 1.0) * (ys >= bottom)
    image += weight * (gravel - image)

  # Street furniture and trees: static clutter of the same scale as people.
  for lamp_x, lamp_y in ((0.30, 0.55), (0.90, 0.62)):
    lx, ly = lamp_x * w, lamp_y * h
    _draw_ellipse(image, lx + 0.03 * h, ly, 0.04 * h, 0.01 * h, 0, alpha=0.25)
    _draw_rect(image, lx - 0.006 * h, ly - 0.22 * h, lx + 0.006 * h, ly, 55)
    _draw_rect(image, lx - 0.02 * h, ly - 0.235 * h, lx + 0.02 * h, ly - 0.215 * h, 200)
  for tree_x, tree_y, radius in _TREES:
    tx, ty, r = tree_x * w, tree_y * h, radius * h
    _draw_ellipse(image, tx + 0.3 * r, ty + 0.2 * r, r, 0.8 * r, 0, alpha=0.3)
    _draw_ellipse(image, tx, ty, r, 0.9 * r, 62)
  canopy = 14 * _smooth_noise(rng, h, w, 0.03 * h)
  tree_mask = np.zeros((h, w), bool)
  for tree_x, tree_y, radius in _TREES:
    tree_mask |= np.hypot(xs - tree_x * w, (ys - tree_y * h) / 0.9) < radius * h
  image = np.where(tree_mask, image + canopy, image)

  # Lens vignetting.
  radius = np.hypot((xs - w / 2) / (w / 2), (ys - h / 2) / (h / 2))
  image *= 1.0 - 0.08 * radius ** 2
  return image.astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Objects.


def _random_colors(rng: np.random.Generator) -> Dict[str, float]:
  # Clothing spans dark to light so that some people barely differ from the pavement.
  torso = rng.choice([rng.uniform(25, 70), rng.uniform(85, 140), rng.uniform(170, 235)])
  return {
      "torso": float(torso),
      "legs": float(rng.uniform(25, 110)),
      # Seen from above and behind, a head is mostly hair or a hat, sometimes a face.
      "head": float(rng.choice([rng.uniform(15, 80), rng.uniform(135, 190)], p=[0.6, 0.4])),
      "body": float(rng.uniform(70, 215)),  # Carts.
      "load": float(rng.uniform(30, 230)),
  }


def _agent_box(agent: _Agent, scene: _Scene) -> Tuple[float, float, float, float]:
  """(x0, y0, x1, y1) of the object drawn at its current position."""
  x, y = _agent_position(agent)
  s = scene.scale(y) * agent.size * scene.height
  if agent.kind == "cart":
    half_w, tall = 0.13 * s, 0.085 * s
  elif agent.kind == "cyclist":
    half_w, tall = 0.08 * s, 0.13 * s
  else:
    half_w, tall = 0.03 * s, 0.13 * s
  return x - half_w, y - tall, x + half_w, y + 0.01 * s


def _agent_position(agent: _Agent) -> Tuple[float, float]:
  along, across = agent.traveled, agent.lateral
  return (agent.route.start[0] + agent.direction[0] * along + agent.normal[0] * across,
          agent.route.start[1] + agent.direction[1] * along + agent.normal[1] * across)


def _visible_fraction(box, scene: _Scene) -> float:
  x0, y0, x1, y1 = box
  inside_w = max(0.0, min(x1, scene.width) - max(x0, 0.0))
  inside_h = max(0.0, min(y1, scene.height) - max(y0, 0.0))
  return inside_w * inside_h / max((x1 - x0) * (y1 - y0), 1e-6)


def _door_alpha(agent: _Agent, scene: _Scene) -> float:
  """People fade in and out in the dark doorway instead of popping up."""
  fade = 0.06 * scene.height
  alpha = 1.0
  if agent.route.starts_at_door:
    alpha = min(alpha, agent.traveled / fade)
  if agent.route.ends_at_door:
    alpha = min(alpha, (agent.length - agent.traveled) / fade)
  return min(max(alpha, 0.0), 1.0)


_RECT, _ELLIPSE = 0, 1


def _agent_shapes(agent: _Agent, scene: _Scene) -> List[Tuple]:
  """The primitives of one object, back to front: (_RECT, x0, y0, x1, y1, value, alpha) or
  (_ELLIPSE, cx, cy, rx, ry, value, alpha)."""
  x, y = _agent_position(agent)
  s = scene.scale(y) * agent.size * scene.height
  alpha = _door_alpha(agent, scene)
  c = agent.colors
  if agent.kind == "cart":
    return [
        (_ELLIPSE, x + 0.02 * s, y, 0.15 * s, 0.02 * s, 0.0, 0.3 * alpha),  # Shadow.
        (_RECT, x - 0.13 * s, y - 0.07 * s, x + 0.13 * s, y - 0.015 * s, c["body"], alpha),
        (_RECT, x - 0.1 * s, y - 0.085 * s, x + 0.06 * s, y - 0.07 * s, c["load"], alpha),
        (_ELLIPSE, x - 0.085 * s, y - 0.015 * s, 0.022 * s, 0.016 * s, 25.0, alpha),
        (_ELLIPSE, x + 0.085 * s, y - 0.015 * s, 0.022 * s, 0.016 * s, 25.0, alpha),
    ]

  swing = math.sin(agent.phase)
  if agent.kind == "cyclist":
    pedal = 0.01 * s * swing
    head_y = y - 0.115 * s
    # Spokes blur into the background at this size, so a wheel is a half-transparent disc.
    shapes = [
        (_ELLIPSE, x - 0.05 * s, y - 0.028 * s, 0.028 * s, 0.028 * s, 30.0, 0.75 * alpha),
        (_ELLIPSE, x + 0.05 * s, y - 0.028 * s, 0.028 * s, 0.028 * s, 30.0, 0.75 * alpha),
        (_RECT, x - 0.05 * s, y - 0.05 * s, x + 0.05 * s, y - 0.042 * s, 50.0, alpha),
        (_RECT, x - 0.012 * s + pedal, y - 0.075 * s, x + 0.012 * s + pedal, y - 0.035 * s,
         c["legs"], alpha),
        (_RECT, x - 0.022 * s, y - 0.115 * s, x + 0.022 * s, y - 0.07 * s, c["torso"], alpha),
    ]
  else:
    bob = 0.004 * s * abs(math.cos(agent.phase))
    stride = (0.018 if agent.kind == "walker" else 0.03) * s * swing
    leg_w = 0.011 * s
    head_y = y - 0.108 * s - bob
    shapes = [
        (_RECT, x + stride - leg_w, y - 0.058 * s - bob, x + stride + leg_w, y - bob, c["legs"],
         alpha),
        (_RECT, x - stride - leg_w, y - 0.058 * s - bob, x - stride + leg_w, y - bob, c["legs"],
         alpha),
        (_RECT, x - 0.027 * s, y - 0.108 * s - bob, x + 0.027 * s, y - 0.055 * s - bob,
         c["torso"], alpha),
    ]
  # A head is three pixels across at the written size: a rectangle is as round as an ellipse.
  shapes.append(
      (_RECT, x - 0.014 * s, head_y - 0.026 * s, x + 0.014 * s, head_y, c["head"], alpha))
  return shapes


def _draw_shapes(image: np.ndarray, shapes: Sequence[Tuple]) -> None:
  """Blends `shapes` into `image` in order.

  The coverage of all rectangles is computed in one batch: per-call overhead of tiny numpy
  operations, not arithmetic, dominates drawing.
  """
  rects = np.array([shape[1:5] for shape in shapes if shape[0] == _RECT], np.float32)
  if len(rects):
    x0, y0, x1, y1 = rects.T
    left = np.clip(np.floor(x0), 0, image.shape[1]).astype(int)
    right = np.clip(np.ceil(x1), 0, image.shape[1]).astype(int)
    top = np.clip(np.floor(y0), 0, image.shape[0]).astype(int)
    bottom = np.clip(np.ceil(y1), 0, image.shape[0]).astype(int)
    span_x = max(int((right - left).max()), 1)
    span_y = max(int((bottom - top).max()), 1)
    cells_x = left[:, None] + _CELLS[None, :span_x]
    cells_y = top[:, None] + _CELLS[None, :span_y]
    cover_x = np.clip(np.minimum(cells_x + 1, x1[:, None]) - np.maximum(cells_x, x0[:, None]),
                      0, 1)
    cover_y = np.clip(np.minimum(cells_y + 1, y1[:, None]) - np.maximum(cells_y, y0[:, None]),
                      0, 1)
  rect_index = 0
  for shape in shapes:
    kind, a, b, c, d, value, alpha = shape
    if kind == _ELLIPSE:
      _draw_ellipse(image, a, b, c, d, value, alpha)
      continue
    k = rect_index
    rect_index += 1
    if alpha <= 0 or right[k] <= left[k] or bottom[k] <= top[k]:
      continue
    weight = cover_y[k, :bottom[k] - top[k], None] * cover_x[k, None, :right[k] - left[k]]
    if alpha < 1:
      weight *= alpha
    region = image[top[k]:bottom[k], left[k]:right[k]]
    region += weight * (value - region)


# ------------------------------------------------------------------------------------------------
# Simulation.


def _make_agent(rng: np.random.Generator, scene: _Scene, kind: str, route: _Route,
                speed: float) -> _Agent:
  agent = _Agent(
      kind=kind, route=route, speed=speed,
      lateral=float(rng.uniform(-route.half_width, route.half_width)),
      size=float(rng.uniform(0.9, 1.1)), colors=_random_colors(rng),
      phase=float(rng.uniform(0, 2 * math.pi)))
  _move_to_entry(agent, scene)
  return agent


def _move_to_entry(agent: _Agent, scene: _Scene) -> None:
  """Backs an edge-entering object up until it is wholly outside the frame."""
  agent.traveled = 0.0
  if agent.route.starts_at_door:
    return
  for _ in range(4 * (scene.height + scene.width)):
    if _visible_fraction(_agent_box(agent, scene), scene) <= 0:
      break
    agent.traveled -= 1.0


def _spawn_walkers(rng: np.random.Generator, scene: _Scene, group_size: int) -> List[_Agent]:
  """A pedestrian or a group walking together on a random path."""
  route_index = rng.choice(len(scene.normal_routes), p=scene.normal_route_weights)
  route = scene.normal_routes[route_index]
  speed = float(rng.uniform(*_WALKER_SPEED))
  walkers = [_make_agent(rng, scene, "walker", route, speed) for _ in range(group_size)]
  # Members walk side by side or in a loose file, never on top of each other.
  lanes = np.linspace(-route.half_width, route.half_width, group_size) if group_size > 1 else [
      walkers[0].lateral]
  for member, (walker, lane) in enumerate(zip(walkers, lanes)):
    walker.lateral = float(lane)
    walker.traveled = walkers[0].traveled - member * rng.uniform(0.02, 0.06) * scene.height
  if rng.random() < _PAUSE_PROBABILITY:
    # Someone stops briefly (phone, looking around): normal footage with little motion.
    pause_at = float(rng.uniform(0.2, 0.8) * walkers[0].length)
    pause_frames = int(rng.integers(*_PAUSE_FRAMES))
    for walker in walkers:
      walker.pause_at, walker.pause_frames = pause_at, pause_frames
  return walkers


def _advance(agent: _Agent, scene: _Scene) -> None:
  if agent.pause_frames > 0 and agent.traveled >= agent.pause_at:
    agent.pause_frames -= 1
    return
  _, y = _agent_position(agent)
  step = agent.speed * scene.height / _MODEL_HEIGHT * scene.scale(y)
  agent.traveled += step
  stride = {"walker": 0.045, "runner": 0.07, "cyclist": 0.08}.get(agent.kind, 1.0)
  agent.phase += math.pi * step / (stride * scene.scale(y) * agent.size * scene.height)


def _finished(agent: _Agent, scene: _Scene) -> bool:
  if agent.traveled < agent.length:
    return False
  return agent.route.ends_at_door or _visible_fraction(_agent_box(agent, scene), scene) <= 0


def _plan_events(rng: np.random.Generator, video_index: int,
                 num_frames: int) -> List[Tuple[str, int]]:
  """(kind, first frame) of the anomalous events of one test video.

  One event per 160 frames, each in the first half of its segment so that the segment also
  holds normal frames; kinds rotate over videos so every kind appears.
  """
  num_events = max(1, num_frames // 160)
  segment = num_frames / num_events
  events = []
  for event_index in range(num_events):
    kind = ANOMALY_KINDS[(video_index + event_index) % len(ANOMALY_KINDS)]
    low = max(1, int(event_index * segment + 0.12 * segment))
    high = max(low, int(event_index * segment + 0.45 * segment))
    events.append((kind, int(rng.integers(low, high + 1))))
  return events


def _spawn_anomaly(rng: np.random.Generator, scene: _Scene, kind: str,
                   frame: int) -> List[Tuple[int, _Agent]]:
  """(spawn frame, object) pairs of one anomalous event."""
  mean_walker_speed = float(np.mean(_WALKER_SPEED))
  if kind == "fast":
    # A single pass lasts ~20 frames; passes in a row give a span of several tens of frames.
    spawns = []
    for _ in range(_FAST_PASSES):
      route = scene.sidewalk_routes[int(rng.integers(2))]
      fast_kind = "cyclist" if rng.random() < _CYCLIST_PROBABILITY else "runner"
      speed = mean_walker_speed * float(rng.uniform(*_FAST_FACTOR))
      spawns.append((frame, _make_agent(rng, scene, fast_kind, route, speed)))
      frame += int(rng.integers(10, 21))
    return spawns
  if kind == "offpath":
    route = scene.offpath_route(rng)
    speed = float(rng.uniform(*_OFFPATH_SPEED))
    return [(frame, _make_agent(rng, scene, "walker", route, speed))]
  if kind == "cart":
    route = scene.sidewalk_routes[int(rng.integers(2))]
    speed = float(rng.uniform(*_CART_SPEED))
    return [(frame, _make_agent(rng, scene, "cart", route, speed))]
  raise ValueError(f"Unknown anomaly kind {kind!r}; known kinds: {ANOMALY_KINDS}.")


def _render_video(scene: _Scene, rng: np.random.Generator, num_frames: int,
                  events: Sequence[Tuple[str, int]]) -> Tuple[np.ndarray, np.ndarray]:
  """Simulates and draws one video.

  Args:
    scene: the fixed view.
    rng: this video's generator; consumed in a fixed order, so the video is reproducible.
    num_frames: frames to return.
    events: (kind, first frame) of anomalous events; empty for training videos.

  Returns:
    frames: uint8 [num_frames, height, width].
    labels: uint8 [num_frames], 1 where an anomalous object is visible.
  """
  # The background crowd drifts between _MIN_WALKERS and _BASE_MAX_WALKERS over tens of frames;
  # two incommensurate periods keep the pattern from repeating within a video.
  periods = rng.uniform(*_DENSITY_PERIODS, size=2)
  offsets = rng.uniform(0, 2 * math.pi, size=2)
  gain = float(rng.uniform(0.96, 1.04))
  drift_period = float(rng.uniform(200, 500))
  drift_offset = float(rng.uniform(0, 2 * math.pi))

  # Sensor noise of a frame is a random window of one larger field: as random per pixel as
  # fresh noise and much cheaper to draw.
  noise_field = _SENSOR_NOISE_STD * rng.standard_normal(
      (scene.height + _NOISE_MARGIN, scene.width + _NOISE_MARGIN), dtype=np.float32)

  pending = []
  for kind, frame in events:
    pending.extend(_spawn_anomaly(rng, scene, kind, frame))
  pending.sort(key=lambda item: item[0])

  walkers: List[_Agent] = []
  anomalies: List[_Agent] = []
  frames = np.empty((num_frames, scene.height, scene.width), np.uint8)
  labels = np.zeros(num_frames, np.uint8)
  for t in range(-_WARMUP_FRAMES, num_frames):
    level = 0.5 + 0.5 * (0.6 * math.sin(2 * math.pi * t / periods[0] + offsets[0]) +
                         0.4 * math.sin(2 * math.pi * t / periods[1] + offsets[1]))
    target = int(round(_MIN_WALKERS + (_BASE_MAX_WALKERS - _MIN_WALKERS) * level))
    # An empty scene refills at once; otherwise arrivals are spread out like real ones.
    if len(walkers) < target and (not walkers or rng.random() < _ARRIVAL_PROBABILITY):
      walkers.extend(_spawn_walkers(rng, scene, 1))
    # Groups (a class letting out, a tour) come on top of the drifting background crowd: they
    # make the busiest normal frames as busy as anomalous ones.
    group_size = int(rng.integers(2, _MAX_GROUP + 1))
    if rng.random() < _GROUP_RATE and len(walkers) + group_size <= _MAX_WALKERS:
      walkers.extend(_spawn_walkers(rng, scene, group_size))
    while pending and pending[0][0] <= t:
      anomalies.append(pending.pop(0)[1])

    for agent in walkers + anomalies:
      _advance(agent, scene)
    walkers = [agent for agent in walkers if not _finished(agent, scene)]
    anomalies = [agent for agent in anomalies if not _finished(agent, scene)]
    if t < 0:
      continue

    image = scene.background.copy()
    # Painter's order: objects lower in the frame are nearer to the camera.
    shapes = []
    for agent in sorted(walkers + anomalies, key=lambda a: _agent_position(a)[1]):
      shapes.extend(_agent_shapes(agent, scene))
    _draw_shapes(image, shapes)
    labels[t] = any(
        _visible_fraction(_agent_box(agent, scene), scene) >= _VISIBLE_FRACTION
        for agent in anomalies)
    drift = 4.0 * math.sin(2 * math.pi * t / drift_period + drift_offset)
    top, left = rng.integers(0, _NOISE_MARGIN + 1, size=2)
    noise = noise_field[top:top + scene.height, left:left + scene.width]
    image = image * gain + drift + noise
    frames[t] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
  return frames, labels


# ------------------------------------------------------------------------------------------------
# Files.


def _video_name(index: int, count: int) -> str:
  return f"{index + 1:0{max(2, len(str(count)))}d}"


def _write_frames(frames: np.ndarray, video_dir: str) -> None:
  os.makedirs(video_dir, exist_ok=True)
  digits = max(3, len(str(len(frames) - 1)))
  for index, frame in enumerate(frames):
    # Fast run-length compression: sensor noise makes stronger settings slow for little gain,
    # and encoding would otherwise take most of the generation time.
    Image.fromarray(frame, mode="L").save(
        os.path.join(video_dir, f"{index:0{digits}d}.png"), compress_level=1,
        compress_type=zlib.Z_RLE)


def _generate_video(scene: _Scene, video_dir: str, split: str, index: int,
                    frames_per_video: int, seed: int) -> Tuple[np.ndarray, List[Tuple[str, int]]]:
  """Renders and writes one video; returns its frame labels and (kind, first frame) events."""
  rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
  events = _plan_events(rng, index, frames_per_video) if split == "testing" else []
  frames, labels = _render_video(scene, rng, frames_per_video, events)
  _write_frames(frames, video_dir)
  return labels, events


def generate(output_dir: str, num_train_videos: int = 8, num_test_videos: int = 6,
             frames_per_video: int = 160, height: int = DEFAULT_HEIGHT,
             width: int = DEFAULT_WIDTH, seed: int = 0, overwrite: bool = False) -> dict:
  """Writes the synthetic dataset in the frames layout under `output_dir`.

  The same arguments always give the same frames and labels. Video `NN` of a split depends only
  on the seed, its split and index, `frames_per_video` and the frame size, not on how many
  videos are written.

  Args:
    output_dir: dataset root; receives training/frames, testing/frames and synthetic.npz.
    num_train_videos: normal-only training videos.
    num_test_videos: test videos, each with normal and anomalous frames.
    frames_per_video: frames of every video (>= MIN_FRAMES_PER_VIDEO).
    height, width: size of the written frames; sizes and speeds scale with `height`.
    seed: generates the scene, the crowds and the anomalies.
    overwrite: replace the frames folders and label file of an earlier generation; without it an
      existing one is an error (stale videos of a larger earlier run would otherwise remain).

  Returns:
    A summary: video and frame counts, anomalous frames (total and by kind), events.

  Raises:
    ValueError: a size is out of range.
    FileExistsError: `output_dir` already holds a dataset and `overwrite` is False.
  """
  if num_train_videos < 1 or num_test_videos < 1:
    raise ValueError(f"Need at least one training and one test video, got {num_train_videos} "
                     f"and {num_test_videos}.")
  if frames_per_video < MIN_FRAMES_PER_VIDEO:
    raise ValueError(f"frames_per_video must be >= {MIN_FRAMES_PER_VIDEO} so that every test "
                     f"video holds normal and anomalous frames, got {frames_per_video}.")
  if height < 32 or width < 32:
    raise ValueError(f"height and width must be >= 32, got {height}x{width}.")

  outputs = [os.path.join(output_dir, split, "frames") for split in _SPLIT_CODES]
  label_path = os.path.join(output_dir, LABEL_FILE)
  existing = [path for path in outputs + [label_path] if os.path.exists(path)]
  if existing and not overwrite:
    raise FileExistsError(f"{output_dir} already holds a generated dataset ({existing[0]}); "
                          "pass overwrite=True (--overwrite) to replace it.")
  for path in existing:
    if os.path.isdir(path):
      shutil.rmtree(path)
    else:
      os.remove(path)

  scene = _Scene(height, width, np.random.default_rng([seed, 0]))
  labels = {}
  events_summary = []
  by_kind = {kind: 0 for kind in ANOMALY_KINDS}
  for split, count in (("training", num_train_videos), ("testing", num_test_videos)):
    for index in range(count):
      name = _video_name(index, count)
      video_labels, events = _generate_video(
          scene, os.path.join(output_dir, split, "frames", name), split, index,
          frames_per_video, seed)
      if split != "testing":
        continue
      labels[name] = video_labels
      for kind, first_frame in events:
        events_summary.append({"video": name, "kind": kind, "first_frame": first_frame})
      # Attributed to the latest event started at or before the frame: exact unless a long
      # event of a long video runs into the next one.
      starts = np.array([first for _, first in events])
      for frame in np.flatnonzero(video_labels):
        by_kind[events[int(np.searchsorted(starts, frame, side="right")) - 1][0]] += 1
  np.savez(label_path, **labels)

  num_test_frames = num_test_videos * frames_per_video
  num_anomalous = int(sum(int(v.sum()) for v in labels.values()))
  summary = {
      "output_dir": output_dir,
      "height": height,
      "width": width,
      "seed": seed,
      "num_train_videos": num_train_videos,
      "num_test_videos": num_test_videos,
      "frames_per_video": frames_per_video,
      "num_train_frames": num_train_videos * frames_per_video,
      "num_test_frames": num_test_frames,
      "num_anomalous_frames": num_anomalous,
      "anomalous_fraction": num_anomalous / num_test_frames,
      "anomalous_frames_by_kind": by_kind,
      "events": events_summary,
  }
  logging.info(
      "Synthetic dataset in %s: %d training videos, %d test videos of %d frames (%dx%d, seed "
      "%d); %d of %d test frames anomalous (%.1f%%; by kind %s).", output_dir, num_train_videos,
      num_test_videos, frames_per_video, height, width, seed, num_anomalous, num_test_frames,
      100.0 * summary["anomalous_fraction"], by_kind)
  return summary


def _read_gray(path: str) -> np.ndarray:
  with Image.open(path) as image:
    return np.asarray(image.convert("L"), dtype=np.float32)


def pixel_difference_auc(data_dir: str, label_file: str = LABEL_FILE) -> float:
  """Frame-level micro AUC of the trivial score |frame t - frame t-1|, as a difficulty check.

  The score of frame t (t >= 1) is the mean absolute gray-level difference to frame t-1,
  min-max normalised per test video; frames of all videos are pooled. A dataset on which this
  is high could be solved by counting moving pixels.

  Args:
    data_dir: a dataset root in the frames layout with a numpy label file.
    label_file: name of the label file in `data_dir`.

  Returns:
    sklearn's roc_auc_score over the pooled frames 1..N-1 of every labelled test video.
  """
  from sklearn import metrics  # Slow to import and only needed here.

  scores, truths = [], []
  with np.load(os.path.join(data_dir, label_file)) as labels:
    for video in sorted(labels.files):
      paths = sorted(glob.glob(os.path.join(data_dir, "testing", "frames", video, "*.png")))
      video_labels = labels[video]
      if len(paths) != len(video_labels):
        raise ValueError(f"Video {video}: {len(paths)} frames but {len(video_labels)} labels.")
      frames = np.stack([_read_gray(path) for path in paths])
      difference = np.abs(np.diff(frames, axis=0)).reshape(len(frames) - 1, -1).mean(axis=1)
      spread = difference.max() - difference.min()
      scores.append((difference - difference.min()) / spread if spread > 0 else
                    np.zeros_like(difference))
      truths.append(video_labels[1:])
  return float(metrics.roc_auc_score(np.concatenate(truths), np.concatenate(scores)))


# ------------------------------------------------------------------------------------------------
# Entry point.


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the generator's flags (call once, before `app.run(main)`)."""
  flags.DEFINE_string("output_dir", None, "Dataset root to write.", flag_values=flag_values)
  flags.DEFINE_integer("num_train_videos", 8, "Normal-only training videos.", lower_bound=1,
                       flag_values=flag_values)
  flags.DEFINE_integer("num_test_videos", 6, "Test videos with anomalous spans.", lower_bound=1,
                       flag_values=flag_values)
  flags.DEFINE_integer("frames_per_video", 160, "Frames of every video.",
                       lower_bound=MIN_FRAMES_PER_VIDEO, flag_values=flag_values)
  flags.DEFINE_integer("height", DEFAULT_HEIGHT, "Height of the written frames.", lower_bound=32,
                       flag_values=flag_values)
  flags.DEFINE_integer("width", DEFAULT_WIDTH, "Width of the written frames.", lower_bound=32,
                       flag_values=flag_values)
  flags.DEFINE_integer("seed", 0, "Seed of scene, crowds and anomalies.", flag_values=flag_values)
  flags.DEFINE_boolean("overwrite", False, "Replace a dataset already in --output_dir.",
                       flag_values=flag_values)
  flags.DEFINE_boolean("report_baseline", False,
                       "Also log the pixel-difference baseline AUC of the written test set.",
                       flag_values=flag_values)
  flags.mark_flag_as_required("output_dir", flag_values=flag_values)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  flag_values = flags.FLAGS
  try:
    generate(flag_values.output_dir, num_train_videos=flag_values.num_train_videos,
             num_test_videos=flag_values.num_test_videos,
             frames_per_video=flag_values.frames_per_video, height=flag_values.height,
             width=flag_values.width, seed=flag_values.seed, overwrite=flag_values.overwrite)
  except FileExistsError as error:
    raise app.UsageError(str(error)) from None
  if flag_values.report_baseline:
    logging.info("Pixel-difference baseline micro AUC: %.4f",
                 pixel_difference_auc(flag_values.output_dir))


if __name__ == "__main__":
  define_flags()
  app.run(main)
