"""Motion evidence: how fast each cell of the latent grid moves, seen at the camera's resolution.

The latent error of the motion model is blind to how fast a small object moves: at the model's
64x96 a cyclist far from the camera is a few pixels. Dense optical flow between consecutive
frames at the input's own resolution (or a stated fraction of it) sees it. A *motion map* is
that flow's magnitude averaged over each cell of the latent grid and divided by its grid row's
high quantile on normal footage (far rows move fewer pixels for the same speed), so that 1 means
"as fast as the fastest normal motion at that distance". The scores of
daml_tf.models.scores that take a motion map weight each cell's latent error by it.

The flow is OpenCV's DIS (dense inverse search, ultrafast preset): among the dense methods
OpenCV ships it is the one that runs at camera rate on one CPU core (under 1 ms for 240x360
here), and OpenCV releases the GIL while it runs, so it overlaps the model's call in a thread.

`MotionNorm` is the fitted normalisation (run_dir.save_motion_norm writes it beside the
threshold); `MotionTracker` turns a stream's frames into motion maps one at a time;
`video_speed` does a whole recorded video.

Example:
  norm = fit_norm([video_speed(frames, grid=(32, 48), scale=1.0) for frames in videos])
  tracker = MotionTracker(norm)
  for frame in camera:
    motion = tracker.update(frame)          # float32 [32, 48]; zeros for the first frame
"""

import dataclasses
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import cv2
import numpy as np

from daml_tf import errors

DEFAULT_QUANTILE = 0.99
# A row that never moves in the normal footage (sky, a wall) has a quantile of zero; dividing by
# it would make any noise there infinite evidence. Its scale is floored at this share of the
# whole grid's quantile instead.
_ROW_FLOOR_SHARE = 0.05


@dataclasses.dataclass(frozen=True)
class MotionNorm:
  """The normalisation of motion maps, fitted on normal footage.

  Attributes:
    scale: the flow is computed at this fraction of the input's resolution, in (0, 1].
    grid: (h, w) of the latent grid the flow is pooled to.
    row_scale: per grid row, the flow speed (pixels per frame at `scale`) that maps to 1.
    quantile: the quantile of the normal footage's cell speeds each row_scale is.
    pairs: how many consecutive frame pairs it was fitted on.
  """

  scale: float
  grid: Tuple[int, int]
  row_scale: Tuple[float, ...]
  quantile: float = DEFAULT_QUANTILE
  pairs: int = 0

  def __post_init__(self):
    check_scale(self.scale)
    if len(self.row_scale) != self.grid[0]:
      raise errors.DataError(f"A motion normalisation of a {self.grid[0]}-row grid has "
                             f"{len(self.row_scale)} row scales.")
    if min(self.row_scale) <= 0:
      raise errors.DataError("Motion normalisation row scales must be positive.")

  def to_dict(self) -> Dict[str, Any]:
    return {"scale": self.scale, "grid": list(self.grid), "row_scale": list(self.row_scale),
            "quantile": self.quantile, "pairs": self.pairs}

  @classmethod
  def from_dict(cls, stored: Dict[str, Any]) -> "MotionNorm":
    try:
      return cls(scale=float(stored["scale"]), grid=tuple(int(v) for v in stored["grid"]),
                 row_scale=tuple(float(v) for v in stored["row_scale"]),
                 quantile=float(stored.get("quantile", DEFAULT_QUANTILE)),
                 pairs=int(stored.get("pairs", 0)))
    except (KeyError, TypeError, ValueError) as error:
      raise errors.DataError(f"Not a motion normalisation: {error}") from None

  def normalize(self, speed: np.ndarray) -> np.ndarray:
    """Pooled speeds [..., h, w] -> motion maps (each row divided by its scale), float32."""
    return (np.asarray(speed, np.float32) /
            np.asarray(self.row_scale, np.float32)[:, np.newaxis]).astype(np.float32)


def check_scale(scale: float) -> float:
  if not 0 < scale <= 1:
    raise errors.ConfigError(f"The flow scale must be in (0, 1], got {scale}.")
  return float(scale)


def to_gray(frame: np.ndarray) -> np.ndarray:
  """uint8 [H, W] of a frame as the detectors take it (uint8/uint16/float in [0, 1]; [H, W],
  [H, W, 1|3], an alpha channel dropped)."""
  frame = np.asarray(frame)
  if frame.ndim == 3 and frame.shape[-1] in (2, 4):
    frame = frame[..., :-1]
  if frame.dtype == np.uint16:
    frame = (frame >> 8).astype(np.uint8)
  elif np.issubdtype(frame.dtype, np.floating):
    frame = np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)
  elif frame.dtype != np.uint8:
    raise ValueError(f"Frames must be uint8, uint16 or float in [0, 1], got {frame.dtype}.")
  if frame.ndim == 3:
    frame = frame[..., 0] if frame.shape[-1] == 1 else cv2.cvtColor(
        np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
  return np.ascontiguousarray(frame)


def flow_input(frame: np.ndarray, scale: float) -> np.ndarray:
  """The gray frame the flow is computed on: `frame` at `scale` of its resolution."""
  gray = to_gray(frame)
  if scale == 1:
    return gray
  height, width = gray.shape
  size = (max(8, int(round(width * scale))), max(8, int(round(height * scale))))
  return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def pool(speed: np.ndarray, grid: Tuple[int, int]) -> np.ndarray:
  """[H, W] -> [h, w]: the mean of each grid cell (area averaging, any ratio)."""
  return cv2.resize(np.asarray(speed, np.float32), (int(grid[1]), int(grid[0])),
                    interpolation=cv2.INTER_AREA)


class FlowSpeed:
  """The speed (flow magnitude, pixels per frame) of consecutive gray frames, pooled to a grid.

  One OpenCV DIS instance, which is not safe to share between threads: one per stream.
  """

  def __init__(self, grid: Tuple[int, int]):
    self.grid = tuple(int(v) for v in grid)
    self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)

  def __call__(self, previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """float32 [h, w]: the mean flow magnitude of each cell from `previous` to `current`."""
    if previous.shape != current.shape:
      return np.zeros(self.grid, np.float32)
    flow = self._dis.calc(previous, current, None)
    return pool(np.sqrt(np.square(flow[..., 0]) + np.square(flow[..., 1])), self.grid)


class MotionTracker:
  """Motion maps of one stream, a frame at a time.

  Args:
    norm: the fitted normalisation (its scale, grid and row scales).
  """

  def __init__(self, norm: MotionNorm):
    self.norm = norm
    self._speed = FlowSpeed(norm.grid)
    self._previous: Optional[np.ndarray] = None

  def reset(self) -> None:
    """Forgets the previous frame (a cut in the stream): the next map is zeros."""
    self._previous = None

  def update(self, frame: np.ndarray) -> np.ndarray:
    """The motion map [h, w] float32 from the previous frame to `frame` (zeros for the first
    frame, or after a change of frame size)."""
    current = flow_input(frame, self.norm.scale)
    previous, self._previous = self._previous, current
    if previous is None:
      return np.zeros(self.norm.grid, np.float32)
    return self.norm.normalize(self._speed(previous, current))


def video_speed(frames: Iterable[np.ndarray], grid: Tuple[int, int],
                scale: float) -> np.ndarray:
  """[N, h, w] float32: each frame's pooled flow speed from the frame before (zeros for the
  first), not normalised (fit_norm takes these; MotionNorm.normalize normalises them)."""
  check_scale(scale)
  speed = FlowSpeed(grid)
  maps, previous = [], None
  for frame in frames:
    current = flow_input(frame, scale)
    maps.append(np.zeros(speed.grid, np.float32) if previous is None else
                speed(previous, current))
    previous = current
  return np.stack(maps) if maps else np.zeros((0,) + speed.grid, np.float32)


def fit_norm(video_speeds: Sequence[np.ndarray], scale: float,
             quantile: float = DEFAULT_QUANTILE) -> MotionNorm:
  """The per-row normalisation of `video_speed` outputs of normal videos.

  Each grid row's scale is the `quantile` of its cells' speeds over every frame pair (the
  first frame of each video, which has no pair, is left out), floored at 5% of the whole
  grid's quantile so a row that never moved cannot divide by zero.

  Raises:
    errors.DataError: no frame pair at all.
  """
  pairs = [np.asarray(s, np.float32)[1:] for s in video_speeds if len(s) > 1]
  if not pairs:
    raise errors.DataError("Fitting a motion normalisation needs videos of at least 2 frames.")
  speeds = np.concatenate(pairs)
  grid = speeds.shape[1:]
  rows = np.quantile(speeds.transpose(1, 0, 2).reshape(grid[0], -1), quantile, axis=1)
  floor = max(float(np.quantile(speeds, quantile)) * _ROW_FLOOR_SHARE, 1e-6)
  return MotionNorm(scale=check_scale(scale), grid=(int(grid[0]), int(grid[1])),
                    row_scale=tuple(float(max(value, floor)) for value in rows),
                    quantile=float(quantile), pairs=int(len(speeds)))

