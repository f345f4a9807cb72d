"""Where in the frame the anomaly is: the latent error map upsampled to the frame, and a box.

The latent error map (daml_tf.models.scores.latent_error_map) has one value per cell of the
latent grid [h, w]; cell (r, c) covers the frame rows [r * H / h, (r + 1) * H / h) and the
columns [c * W / w, (c + 1) * W / w). Pure NumPy (and scipy.ndimage; PIL for the drawing of
`annotate`), so it runs in any runtime.
"""

from typing import Optional, Tuple

import numpy as np
from scipy import ndimage

# Cells above this share of the map's maximum belong to the anomalous region.
DEFAULT_FRACTION = 0.5

Box = Tuple[int, int, int, int]


def _check_map(error_map) -> np.ndarray:
  error_map = np.asarray(error_map, np.float32)
  if error_map.ndim != 2 or error_map.size == 0:
    raise ValueError(f"An error map must be [h, w], got shape {error_map.shape}.")
  return error_map


def upsample(error_map, height: int, width: int) -> np.ndarray:
  """float32 [height, width]: each frame pixel takes the value of the latent cell covering it.

  Nearest-cell (not interpolated), so the heatmap shows the grid the score is computed on.
  """
  error_map = _check_map(error_map)
  rows = (np.arange(height) * error_map.shape[0]) // height
  cols = (np.arange(width) * error_map.shape[1]) // width
  return error_map[rows[:, None], cols[None, :]]


def cell_box_to_frame(cell_box: Box, map_shape: Tuple[int, int],
                      frame_size: Tuple[int, int]) -> Box:
  """(x0, y0, x1, y1) in frame pixels (x1, y1 exclusive) of the cells [r0..r1] x [c0..c1].

  Args:
    cell_box: (c0, r0, c1, r1), inclusive cell indices.
    map_shape: (h, w) of the map.
    frame_size: (H, W) of the frame.
  """
  c0, r0, c1, r1 = cell_box
  (h, w), (height, width) = map_shape, frame_size
  # Floor the start and ceil the end: the box covers every pixel of the cells it holds.
  return (c0 * width // w, r0 * height // h, -(-(c1 + 1) * width // w),
          -(-(r1 + 1) * height // h))


def anomaly_box(error_map, frame_size: Tuple[int, int],
                fraction: float = DEFAULT_FRACTION) -> Optional[Box]:
  """The box around the most anomalous region of a frame.

  The map is thresholded at `fraction` of its maximum; the region is the connected component
  (8-neighbourhood) of the cells above it that holds the maximum.

  Args:
    error_map: [h, w] latent error map of the frame.
    frame_size: (H, W) of the frame.
    fraction: in (0, 1].

  Returns:
    (x0, y0, x1, y1) in frame pixels, x1 and y1 exclusive; None when the map is all zero (or
    not finite): no cell stands out.
  """
  error_map = _check_map(error_map)
  if not 0 < fraction <= 1:
    raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
  peak = float(np.max(error_map))
  if not np.isfinite(peak) or peak <= 0:
    return None
  labels, _ = ndimage.label(error_map >= fraction * peak, structure=np.ones((3, 3), bool))
  peak_label = labels[np.unravel_index(np.argmax(error_map), error_map.shape)]
  rows, cols = np.nonzero(labels == peak_label)
  return cell_box_to_frame((int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())),
                           error_map.shape, frame_size)


def heatmap_overlay(frame: np.ndarray, error_map, scale: Optional[float] = None,
                    opacity: float = 0.55) -> np.ndarray:
  """uint8 [H, W, 3]: the frame blended towards red where the error map is high.

  Args:
    frame: uint8 [H, W, 1|3].
    error_map: [h, w].
    scale: the map value drawn fully red (for example twice the alarm threshold, so that a
      normal frame stays faint); None: the map's own maximum.
    opacity: the blend weight of a fully red pixel.
  """
  frame = np.asarray(frame, np.uint8)
  if frame.shape[-1] == 1:
    frame = np.repeat(frame, 3, axis=-1)
  heat = upsample(error_map, frame.shape[0], frame.shape[1])
  scale = float(np.max(heat)) if scale is None else float(scale)
  weight = opacity * np.clip(heat / scale, 0, 1) if scale > 0 else np.zeros_like(heat)
  red = np.array([255, 0, 0], np.float32)
  blended = frame * (1 - weight[..., None]) + red * weight[..., None]
  return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


# Box colours of `annotate`: an alarm, and an anomalous region below the alarm threshold.
RED = (255, 0, 0)
YELLOW = (255, 220, 0)


def annotate(frame: np.ndarray, error_map, text: str, scale: Optional[float] = None,
             box_color: Tuple[int, int, int] = YELLOW, banner: Optional[str] = None
             ) -> np.ndarray:
  """uint8 [H, W, 3]: the frame with its error map as a heatmap, the anomaly box and a caption.

  What `detect --annotate` and `evaluate --heatmaps` draw: the heatmap (`heatmap_overlay`),
  the box of `anomaly_box` in `box_color`, `text` on a dark strip at the bottom and, when
  `banner` is given, that word on a red strip at the top and a red border (an alarm).

  Args:
    frame: uint8 [H, W, 1|3], as read.
    error_map: [h, w] latent error map of the frame, or None (no heatmap and no box).
    text: the caption (the frame's score).
    scale: the map value drawn fully red; None: the map's own maximum.
    box_color: RGB of the box.
    banner: a word drawn at the top, or None.
  """
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  frame = np.asarray(frame, np.uint8)
  if frame.shape[-1] == 1:
    frame = np.repeat(frame, 3, axis=-1)
  box = None
  if error_map is not None:
    frame = heatmap_overlay(frame, error_map, scale=scale)
    box = anomaly_box(error_map, frame.shape[:2])
  image = Image.fromarray(np.ascontiguousarray(frame), "RGB")
  draw = ImageDraw.Draw(image)
  width, height = image.size
  if box is not None:
    draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=box_color, width=2)
  left, top, right, bottom = draw.textbbox((0, 0), text)
  # A dark strip under the text keeps it legible on any background.
  text_y = height - (bottom - top) - 4
  draw.rectangle([0, text_y - 2, right - left + 4, height], fill=(0, 0, 0))
  draw.text((2, text_y - top), text, fill=(255, 255, 255))
  if banner:
    _, banner_top, _, banner_bottom = draw.textbbox((0, 0), banner)
    banner_height = banner_bottom - banner_top + 6
    draw.rectangle([0, 0, width, banner_height], fill=(220, 0, 0))
    draw.text((3, 3 - banner_top), banner, fill=(255, 255, 255))
    draw.rectangle([0, 0, width - 1, height - 1], outline=(220, 0, 0), width=2)
  return np.asarray(image)
