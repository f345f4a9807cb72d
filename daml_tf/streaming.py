"""Online (live camera) anomaly detection: one frame in, one score out.

`StreamingDetector` encodes each incoming frame once and keeps in a ring buffer exactly the
latent codes that the clip geometry still needs, so a frame costs one encoder pass plus the
motion model, and its scores are those of the batch evaluation (`evaluation.VideoScorer`) on the
same video. `run_detection` drives it over a video file or frames folder and writes the scores,
a plot and optionally an annotated video (`python -m daml_tf.detect`).

The encoder and motion model run on a backend (`Backend`): the Keras model of a training run,
the `encode` / `predict_latent` signatures of a serving SavedModel (daml_tf.serving), or LiteRT
flatbuffers (daml_tf.litert); `open_model` picks it from what the model directory holds.

Thresholds: `calibrate_threshold` takes a quantile of the raw scores of normal footage and
`save_threshold` stores it as `<model_dir>/threshold.json`, which `StreamingDetector.
from_model_dir` and `detect` use unless a threshold is given (an export records it too).
"""

import collections
import csv
import dataclasses
import io
import json
import os
import time
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from daml_tf import config as config_lib
from daml_tf import evaluation
from daml_tf import litert
from daml_tf import report
from daml_tf import serving
from daml_tf import training
from daml_tf import video_io
from daml_tf.data import layout
from daml_tf.data import pipeline
from daml_tf.models import DAML

THRESHOLD_FILE = "threshold.json"
SCORES_FILE = "scores.csv"
PLOT_FILE = "scores.png"
ANNOTATED_BASENAME = "annotated"
CSV_COLUMNS = ("frame", "timestamp_s", "score", "alarm")
# Float frames a little outside [0, 1] (rounding in a camera pipeline) are still accepted.
_FLOAT_RANGE_SLACK = 1e-3


@dataclasses.dataclass(frozen=True)
class FrameResult:
  """The detector's verdict on one frame.

  Attributes:
    index: 0-based index of the frame since the start (or the last reset).
    score: raw anomaly score (mean squared error of the predicted latent code), or None while
      the buffer does not yet hold the frames this frame is predicted from.
    smoothed: mean of the last `smoothing_window` raw scores up to and including this one
      (fewer at the start of scoring), or None when `score` is None.
    alarm: smoothed > threshold (always False without a threshold or a score).
  """

  index: int
  score: Optional[float]
  smoothed: Optional[float]
  alarm: bool


class CausalSmoother:
  """Running mean of the last `window` values; each output uses only values seen so far.

  Until `window` values have arrived the mean is over those there are, so the first scored
  frame already has a smoothed score.

  Args:
    window: number of values averaged (1: no smoothing).
  """

  def __init__(self, window: int = 1):
    if window < 1:
      raise ValueError(f"smoothing window must be >= 1, got {window}.")
    self._values = collections.deque(maxlen=window)

  def update(self, value: float) -> float:
    self._values.append(value)
    return float(np.mean(self._values))

  def reset(self) -> None:
    self._values.clear()


class Backend(Protocol):
  """What the streaming detector needs of a runtime: the encoder and the motion model.

  The detector validates each frame, keeps the codes and computes the score; a backend only
  runs the two networks. Implementations: `KerasBackend` (a restored DAML), `SavedModelBackend`
  (a serving export's `encode` / `predict_latent` signatures) and `litert.LiteRTBackend`
  (LiteRT flatbuffers).

  Attributes:
    name: for logs.
    image_size, channels, time_steps: the model's geometry, checked against the clip config.
  """

  name: str
  image_size: Tuple[int, int]
  channels: int
  time_steps: int

  def encode(self, frame: np.ndarray) -> np.ndarray:
    """Preprocesses one frame as training does, subtracts the background and encodes it.

    Args:
      frame: uint8, uint16 or float32 in [0, 1]; [H, W, 1|3] at any size.

    Returns:
      Its latent code, float32 [1, h, w, c].
    """

  def predict(self, past: np.ndarray) -> np.ndarray:
    """The motion model's prediction of the next code from float32 [1, k, h, w, c] codes."""


class KerasBackend:
  """A DAML model: one preprocess+encode tf.function per (channels, dtype) of the frames.

  Args:
    model: a restored DAML with its background set.
  """

  def __init__(self, model: DAML):
    self._model = model
    self.name = "Keras"
    self.image_size = tuple(model.image_size)
    self.channels = int(model.channels)
    self.time_steps = int(model.time_steps)
    self._encoders = {}
    self._predict = tf.function(lambda past: model.motion(past, training=False))

  def _encoder_for(self, channels: int, dtype: tf.DType):
    """The preprocess+encode tf.function for frames of one channel count and dtype.

    One input signature per (channels, dtype) with free height and width: a camera's frames
    never retrace.
    """
    key = (channels, dtype)
    if key not in self._encoders:
      model = self._model

      @tf.function(input_signature=[tf.TensorSpec([None, None, channels], dtype)])
      def encode(frame):
        # The serving export's preprocessing, which is pipeline._decode's.
        image = serving.preprocess_frames(frame[tf.newaxis], model.image_size, model.channels)
        return model.encode(image - model.background, training=False)[-1]

      self._encoders[key] = encode
    return self._encoders[key]

  def encode(self, frame: np.ndarray) -> np.ndarray:
    encode = self._encoder_for(frame.shape[-1], tf.as_dtype(frame.dtype))
    return encode(tf.constant(frame)).numpy()

  def predict(self, past: np.ndarray) -> np.ndarray:
    return self._predict(tf.constant(past)).numpy()


class SavedModelBackend:
  """A serving export (`<export_dir>/<version>/`): its `encode` and `predict_latent` signatures.

  The encode signature takes uint8 frames only (what cameras and video decoders deliver); the
  preprocessing runs inside it.

  Args:
    saved_model_dir: the version directory.
  """

  def __init__(self, saved_model_dir: str):
    self.metadata = serving.read_metadata(saved_model_dir)
    self.name = f"SavedModel ({saved_model_dir})"
    self.image_size = tuple(self.metadata["image_size"])
    self.channels = int(self.metadata["channels"])
    self.time_steps = int(self.metadata["time_steps"])
    self._loaded = tf.saved_model.load(saved_model_dir)
    self._encode = self._loaded.signatures["encode"]
    self._predict = self._loaded.signatures["predict_latent"]

  def encode(self, frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8:
      raise ValueError(f"The SavedModel's encode signature takes uint8 frames, got "
                       f"{frame.dtype}; use the training run or the LiteRT export for others.")
    return self._encode(frames=tf.constant(frame[np.newaxis]))["latent"].numpy()

  def predict(self, past: np.ndarray) -> np.ndarray:
    return self._predict(past_latents=tf.constant(past))["predicted_latent"].numpy()


class StreamingDetector:
  """Scores frames one at a time, as they come from a camera.

  Each frame is preprocessed exactly as training and evaluation do (gray/RGB conversion with
  tf.image, bilinear resize to the model size, scaling to [0, 1], minus the model's background)
  and encoded once, by the backend (a Keras model, a serving SavedModel or LiteRT flatbuffers;
  see `Backend`). The latent codes of the last `clip_span + 1` frames sit in a ring buffer:
  frame t is predicted from the codes of frames t - delta - (k-1-i) * interval, i = 0..k-1, the
  oldest of which is t - clip_span. The first `clip_span` frames therefore get no score (None),
  as in the batch evaluation. The score is the mean squared error of the predicted code
  (`latent_error`), computed here in float32.

  Args:
    model: a DAML model (restored, with its background set), run by a KerasBackend, or any
      Backend.
    data_cfg: the model's DataConfig (image size, channels, k, interval, delta).
    threshold: raw (smoothed) score above which a frame raises an alarm; None: never.
    smoothing_window: causal moving average over this many raw scores before thresholding.

  Example:
    detector = StreamingDetector.from_model_dir("runs/demo", smoothing_window=5)
    for frame in camera:                      # uint8 [H, W, 3] at any size
      result = detector.process(frame)
      if result.alarm:
        notify(result.index, result.smoothed)
  """

  def __init__(self, model, data_cfg: config_lib.DataConfig,
               threshold: Optional[float] = None, smoothing_window: int = 1):
    backend = KerasBackend(model) if isinstance(model, DAML) else model
    model_geometry = (tuple(backend.image_size), backend.channels, backend.time_steps)
    cfg_geometry = (tuple(data_cfg.image_size), data_cfg.channels, data_cfg.time_steps)
    if model_geometry != cfg_geometry:
      raise ValueError(f"Model geometry (size, channels, k) {model_geometry} differs from the "
                       f"data config's {cfg_geometry}.")
    self._backend = backend
    self._data_cfg = data_cfg
    self.threshold = None if threshold is None else float(threshold)
    self._smoother = CausalSmoother(smoothing_window)
    self.smoothing_window = smoothing_window
    k, interval = data_cfg.time_steps, data_cfg.interval
    # With the target in the last slot, input i sits at slot i * interval (see the class doc).
    self._input_slots = tuple(i * interval for i in range(k))
    self._codes = collections.deque(maxlen=data_cfg.clip_span + 1)
    self._warned_shape = None
    self._next_index = 0

  @classmethod
  def from_model_dir(cls, model_dir: str, threshold: Optional[float] = None,
                     smoothing_window: int = 1,
                     litert_precision: str = "float32") -> "StreamingDetector":
    """A detector for a training run, a serving export or a LiteRT export.

    Args:
      model_dir: a training run's directory (config.json, checkpoints/; its newest checkpoint),
        a serving SavedModel version directory, a LiteRT export directory, or a directory of
        numbered versions of either (the highest is used, as TF Serving does).
      threshold: overrides the stored threshold (threshold.json of a run, the one recorded in
        an export); with neither, no alarms.
      smoothing_window: see the class.
      litert_precision: "float32" or "float16": which LiteRT flatbuffers to run.

    Raises:
      FileNotFoundError: model_dir is none of these, or has no checkpoint.
      layout.DataError: an export without the clip geometry (interval, delta).
    """
    backend, data_cfg, stored = open_model(model_dir, litert_precision)
    if threshold is None and stored is not None:
      threshold = stored["threshold"]
      logging.info("Threshold %.6g (quantile %s of normal scores) stored with %s", threshold,
                   stored.get("quantile"), model_dir)
    logging.info("Streaming detector on %s", backend.name)
    return cls(backend, data_cfg, threshold=threshold, smoothing_window=smoothing_window)

  @property
  def data_cfg(self) -> config_lib.DataConfig:
    return self._data_cfg

  @property
  def backend(self) -> Backend:
    return self._backend

  @property
  def buffer_capacity(self) -> int:
    """Latent codes kept: clip_span + 1 (the oldest input through the current frame)."""
    return self._codes.maxlen

  @property
  def buffered_codes(self) -> Tuple[np.ndarray, ...]:
    """The buffered latent codes, oldest first, each [1, h, w, c]."""
    return tuple(self._codes)

  def reset(self) -> None:
    """Forgets all frames (a new stream, or a cut in this one): scoring restarts after
    clip_span frames and indices restart at 0."""
    self._codes.clear()
    self._smoother.reset()
    self._next_index = 0

  def _check_frame(self, frame) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim == 2:
      frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[-1] not in (1, 2, 3, 4):
      raise ValueError(f"A frame must be [H, W], [H, W, 1|3] (or with alpha), got shape "
                       f"{frame.shape}.")
    if frame.shape[-1] in (2, 4):
      # Alpha carries no appearance (pipeline.to_channels drops it too).
      frame = frame[..., :-1]
    if np.issubdtype(frame.dtype, np.floating):
      low, high = float(frame.min()), float(frame.max())
      if low < -_FLOAT_RANGE_SLACK or high > 1 + _FLOAT_RANGE_SLACK:
        raise ValueError(f"Float frames must be in [0, 1], got values in [{low:.4g}, "
                         f"{high:.4g}]; pass uint8 frames for 0..255 pixel values.")
      frame = frame.astype(np.float32, copy=False)
    elif frame.dtype not in (np.uint8, np.uint16):
      raise ValueError(f"Frames must be uint8, uint16 or float in [0, 1], got {frame.dtype}.")
    model_shape = tuple(self._data_cfg.image_size) + (self._data_cfg.channels,)
    if frame.shape != model_shape and frame.shape != self._warned_shape:
      self._warned_shape = frame.shape
      logging.warning(
          "Input frames are %dx%dx%d, the model takes %dx%dx%d: resizing bilinearly%s, as the "
          "training frames were.", frame.shape[0], frame.shape[1], frame.shape[2],
          *model_shape,
          "" if frame.shape[-1] == model_shape[-1] else
          (" and converting to gray" if model_shape[-1] == 1 else " and converting to RGB"))
    return np.ascontiguousarray(frame)

  def process(self, frame) -> FrameResult:
    """Takes the next frame of the stream and scores it.

    Args:
      frame: uint8 (or uint16) [H, W, C] or [H, W], or float in [0, 1]; C = 1 or 3 (an alpha
        channel is dropped); any size (resized to the model's). The SavedModel backend takes
        uint8 only.

    Returns:
      FrameResult; score None while fewer than clip_span frames precede this one.
    """
    frame = self._check_frame(frame)
    self._codes.append(np.asarray(self._backend.encode(frame), np.float32))
    index = self._next_index
    self._next_index += 1
    if len(self._codes) < self._codes.maxlen:
      return FrameResult(index=index, score=None, smoothed=None, alarm=False)
    past = np.stack([self._codes[slot] for slot in self._input_slots], axis=1)
    predicted = np.asarray(self._backend.predict(past), np.float32)
    # latent_error in NumPy: float32 squares, mean over every element of the one code.
    score = float(np.mean(np.square(predicted - self._codes[-1]), dtype=np.float32))
    smoothed = self._smoother.update(score)
    alarm = self.threshold is not None and smoothed > self.threshold
    return FrameResult(index=index, score=score, smoothed=smoothed, alarm=bool(alarm))


# ------------------------------------------------------------------------------------------------
# Model directories and thresholds.


def load_run_config(model_dir: str) -> config_lib.Config:
  """The resolved config of a training run; FileNotFoundError if model_dir has none."""
  path = os.path.join(model_dir, training.CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"No {training.CONFIG_FILE} in {model_dir!r}: not a trained model directory (train "
        f"one with python -m daml_tf.train --model_dir={model_dir} ...).")
  return config_lib.load_config(path)


def _export_version(model_dir: str) -> str:
  """model_dir if it is an export, else its highest numbered version holding one."""
  def is_export(path):
    return serving.is_saved_model_dir(path) or litert.is_litert_dir(path)

  if is_export(model_dir) or not tf.io.gfile.isdir(model_dir):
    return model_dir
  versions = sorted((int(name.rstrip("/")) for name in tf.io.gfile.listdir(model_dir)
                     if name.rstrip("/").isdigit()), reverse=True)
  for version in versions:
    path = os.path.join(model_dir, str(version))
    if is_export(path):
      logging.info("Using version %d of %s (the highest)", version, model_dir)
      return path
  return model_dir


def _export_data_config(metadata: Dict[str, Any], path: str) -> config_lib.DataConfig:
  if "data_config" not in metadata:
    raise layout.DataError(
        f"The export {path!r} records no clip geometry (interval, delta), which streaming "
        "needs: export it again with python -m daml_tf.export.")
  known = {field.name for field in dataclasses.fields(config_lib.DataConfig)}
  return config_lib.DataConfig(
      **{name: value for name, value in metadata["data_config"].items() if name in known})


def open_model(model_dir: str, litert_precision: str = "float32"
               ) -> Tuple[Backend, config_lib.DataConfig, Optional[Dict[str, float]]]:
  """The backend, clip config and stored threshold of a run or an export.

  Args:
    model_dir: a training run's directory, a serving SavedModel version directory, a LiteRT
      export directory, or a directory of numbered versions of either (the highest is used).
    litert_precision: "float32" or "float16", for a LiteRT export.

  Returns:
    (Backend, config.DataConfig, stored threshold {"threshold", "quantile"} or None).

  Raises:
    FileNotFoundError: model_dir is none of these, or a run without a checkpoint.
    layout.DataError: an export without the clip geometry.
  """
  if tf.io.gfile.exists(os.path.join(model_dir, training.CONFIG_FILE)):
    cfg = load_run_config(model_dir)
    model = training.restore_model(cfg, model_dir)
    return KerasBackend(model), cfg.data, load_threshold(model_dir)
  path = _export_version(model_dir)
  if serving.is_saved_model_dir(path):
    backend = SavedModelBackend(path)
  elif litert.is_litert_dir(path):
    backend = litert.LiteRTBackend(path, litert_precision)
  else:
    raise FileNotFoundError(
        f"{model_dir!r} is neither a training run (no {training.CONFIG_FILE}) nor a serving or "
        f"LiteRT export (no saved_model.pb or {litert.METADATA_FILE}, nor numbered versions "
        "holding one).")
  return backend, _export_data_config(backend.metadata, path), backend.metadata.get("threshold")


def calibrate_threshold(model: DAML, data_cfg: config_lib.DataConfig,
                        videos: Sequence[layout.Video], quantile: float = 0.995,
                        batch_size: int = 32) -> float:
  """A threshold: the `quantile` of the raw scores of normal videos.

  The videos should be normal footage of the camera the model watches, ideally held out from
  training: on its own training videos the model predicts better than on new normal footage,
  so a threshold taken there is lower and raises more false alarms. The training videos are
  still a usable fallback (with a higher quantile) when nothing else is available.

  Args:
    model: the restored model (its background is used).
    data_cfg: its DataConfig.
    videos: normal videos in the frames layout (e.g. `layout.list_videos(root, "training",
      spec)`).
    quantile: in (0, 1]; the share of normal frames that stay below the threshold.
    batch_size: frames encoded at once.

  Returns:
    The threshold on raw (unsmoothed) scores.

  Raises:
    ValueError: quantile out of range, or no video long enough to score a frame.
  """
  if not 0 < quantile <= 1:
    raise ValueError(f"quantile must be in (0, 1], got {quantile}.")
  scorer = evaluation.VideoScorer(model, data_cfg, batch_size)
  background = model.background.numpy()
  scores = []
  for video in videos:
    frames = pipeline.load_video(video, data_cfg.image_size, data_cfg.channels, background)
    scores.append(scorer.score(frames)[1])
  scores = np.concatenate(scores) if scores else np.zeros([0], np.float32)
  if not scores.size:
    raise ValueError(f"No frame of the {len(videos)} calibration video(s) could be scored "
                     f"(each needs more than {data_cfg.clip_span} frames).")
  threshold = float(np.quantile(scores.astype(np.float64), quantile))
  logging.info("Threshold %.6g: quantile %s of %d normal frame scores (%d videos)", threshold,
               quantile, scores.size, len(videos))
  return threshold


def save_threshold(model_dir: str, threshold: float, quantile: float) -> str:
  """Writes `<model_dir>/threshold.json` ({"threshold": ..., "quantile": ...}); returns it."""
  path = os.path.join(model_dir, THRESHOLD_FILE)
  tf.io.gfile.makedirs(model_dir)
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(json.dumps({"threshold": float(threshold), "quantile": float(quantile)},
                       indent=2, sort_keys=True) + "\n")
  return path


def load_threshold(model_dir: str) -> Optional[Dict[str, float]]:
  """The contents of `<model_dir>/threshold.json`, or None if there is none."""
  path = os.path.join(model_dir, THRESHOLD_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    stored = json.load(f)
  if "threshold" not in stored:
    raise layout.DataError(f"{path!r} has no \"threshold\" entry.")
  return stored


# ------------------------------------------------------------------------------------------------
# Detection over a recorded video.


@dataclasses.dataclass(frozen=True)
class DetectionSummary:
  """What `run_detection` did.

  Attributes:
    frames: frames read.
    scored: frames with a score.
    alarms: frames with an alarm.
    mean_fps: frames per second over the whole run (decode, score, annotate).
    threshold: the threshold used (None: no alarms).
    stopped_at: index of the frame where decoding stopped early, or None if the input was
      read to its end.
    scores_csv, plot_png: the files written.
    annotated_video: the annotated video, or None.
  """

  frames: int
  scored: int
  alarms: int
  mean_fps: float
  threshold: Optional[float]
  stopped_at: Optional[int]
  scores_csv: str
  plot_png: str
  annotated_video: Optional[str]


def annotate_frame(frame: np.ndarray, result: FrameResult, threshold: Optional[float],
                   smoothing_window: int = 1) -> np.ndarray:
  """The frame as RGB with its score (the thresholded one) and, on an alarm, an ALARM banner.

  Args:
    frame: uint8 [H, W, 1|3], as read.
    result: the detector's result for it.
    threshold: shown next to the score when given.
    smoothing_window: the detector's; above 1 the smoothed score is shown (and labelled so).

  Returns:
    uint8 [H, W, 3].
  """
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  if frame.shape[-1] == 1:
    frame = np.repeat(frame, 3, axis=-1)
  image = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8), "RGB")
  draw = ImageDraw.Draw(image)
  width, height = image.size
  if result.score is None:
    text = f"#{result.index} warming up"
  else:
    label = "score" if smoothing_window == 1 else "smoothed"
    text = f"#{result.index} {label} {result.smoothed:.4g}"
    if threshold is not None:
      text += f" / {threshold:.4g}"
  left, top, right, bottom = draw.textbbox((0, 0), text)
  # A dark box under the text keeps it legible on any background.
  text_y = height - (bottom - top) - 4
  draw.rectangle([0, text_y - 2, right - left + 4, height], fill=(0, 0, 0))
  draw.text((2, text_y - top), text, fill=(255, 255, 255))
  if result.alarm:
    _, banner_top, _, banner_bottom = draw.textbbox((0, 0), "ALARM")
    banner_height = banner_bottom - banner_top + 6
    draw.rectangle([0, 0, width, banner_height], fill=(220, 0, 0))
    draw.text((3, 3 - banner_top), "ALARM", fill=(255, 255, 255))
    draw.rectangle([0, 0, width - 1, height - 1], outline=(220, 0, 0), width=2)
  return np.asarray(image)


def _format_score(score: Optional[float]) -> str:
  # float32 precision, shortest round-trip form, as report.write_scores_csv writes scores.
  return "" if score is None else str(np.float32(score))


def write_detection_csv(path: str, rows: Sequence[Tuple[int, float, FrameResult]]) -> None:
  """Writes `frame,timestamp_s,score,alarm` (empty score for unscored frames)."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(CSV_COLUMNS)
  for index, timestamp, result in rows:
    writer.writerow((index, f"{timestamp:.6g}", _format_score(result.score), int(result.alarm)))
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(buffer.getvalue())


def plot_detection(path: str, rows: Sequence[Tuple[int, float, FrameResult]],
                   threshold: Optional[float], title: str) -> None:
  """Saves a PNG of the raw (and smoothed) score curve with the threshold and alarm spans."""
  # A bare Figure renders with Agg without touching pyplot's global state (as report.py).
  from matplotlib import figure as mpl_figure  # pylint: disable=g-import-not-at-top
  indices = np.array([index for index, _, _ in rows], np.int64)
  scored = [(index, r) for index, _, r in rows if r.score is not None]
  alarms = np.array([r.alarm for _, _, r in rows], bool)
  fig = mpl_figure.Figure(figsize=(10, 3.2), dpi=100)
  axes = fig.add_subplot(1, 1, 1)
  for span_number, (start, end) in enumerate(report.anomalous_spans(alarms)):
    axes.axvspan(indices[start] - 0.5, indices[end - 1] + 0.5, color="tab:red", alpha=0.2,
                 linewidth=0, label="alarm" if span_number == 0 else None)
  if scored:
    xs = [index for index, _ in scored]
    axes.plot(xs, [r.score for _, r in scored], color="tab:blue", linewidth=1.0,
              label="score")
    if any(r.smoothed != r.score for _, r in scored):
      axes.plot(xs, [r.smoothed for _, r in scored], color="tab:orange", linewidth=1.2,
                label="smoothed")
  if threshold is not None:
    axes.axhline(threshold, color="tab:red", linestyle="--", linewidth=1.0, label="threshold")
  axes.set_xlim(-0.5, max(len(indices), 1) - 0.5)
  axes.set_xlabel("frame index")
  axes.set_ylabel("raw anomaly score")
  axes.set_title(title, loc="left")
  axes.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=4, frameon=False,
              fontsize="small")
  fig.tight_layout()
  report.save_figure(fig, path)


def run_detection(model_dir: str, input_path: str, output_dir: str,
                  threshold: Optional[float] = None, smoothing_window: int = 1,
                  annotate: bool = False, fps: float = video_io.DEFAULT_FPS,
                  log_every: int = 100, litert_precision: str = "float32") -> DetectionSummary:
  """Runs the streaming detector over a recorded video or frames folder.

  Writes `<output_dir>/scores.csv` (frame,timestamp_s,score,alarm; empty score for the first
  clip_span frames), `<output_dir>/scores.png` and, with `annotate`, `<output_dir>/annotated.mp4`
  (libx264) or `annotated.avi` (mpeg4 or mjpeg, whichever encoder FFmpeg has).

  A video that stops decoding part-way keeps the frames before: the outputs are written for
  them and `stopped_at` says where it stopped (a warning is logged too).

  Args:
    model_dir: a training run's directory, or a serving or LiteRT export (see `open_model`).
    input_path: a video file or a folder of frames.
    output_dir: created if needed.
    threshold: overrides the stored threshold (`<model_dir>/threshold.json`, or the one
      recorded in an export); with neither, no frame raises an alarm.
    smoothing_window: causal moving average of the raw scores before thresholding.
    annotate: also write the annotated video.
    fps: frame rate of a frames folder (timestamps, annotated video).
    log_every: frames between progress lines.
    litert_precision: "float32" or "float16": the flatbuffers run for a LiteRT export.

  Returns:
    DetectionSummary.

  Raises:
    FileNotFoundError: input_path, or the model's config or checkpoint, is missing.
    config.ConfigError: smoothing_window < 1, fps <= 0 or an unknown litert_precision.
    layout.DataError: the input holds no readable frame.
  """
  if smoothing_window < 1:
    raise config_lib.ConfigError(f"--smoothing_window must be >= 1, got {smoothing_window}.")
  if fps <= 0:
    raise config_lib.ConfigError(f"--fps must be > 0, got {fps}.")
  if litert_precision not in litert.PRECISIONS:
    raise config_lib.ConfigError(f"--litert_precision must be one of {litert.PRECISIONS}, got "
                                 f"{litert_precision!r}.")
  if not tf.io.gfile.exists(input_path):
    raise FileNotFoundError(
        f"Input {input_path!r} does not exist: give a video file or a folder of frames.")
  if not tf.io.gfile.isdir(model_dir):
    raise FileNotFoundError(f"Model directory {model_dir!r} does not exist.")
  detector = StreamingDetector.from_model_dir(model_dir, threshold, smoothing_window,
                                              litert_precision)
  if detector.threshold is None:
    logging.warning("No threshold (no --threshold, none stored with %s): scores only, no "
                    "alarms.", model_dir)
  tf.io.gfile.makedirs(output_dir)

  writer = None
  video_path = None
  if annotate:
    codec, extension = video_io.pick_output_format()
    video_path = os.path.join(output_dir, ANNOTATED_BASENAME + extension)
    writer = video_io.VideoWriter(video_path, fps=video_io.video_fps(input_path, fps),
                                  codec=codec)
  rows: List[Tuple[int, float, FrameResult]] = []
  stopped_at = None
  start = window_start = time.perf_counter()
  try:
    try:
      for index, timestamp, frame in video_io.iter_frames(input_path, fps):
        result = detector.process(frame)
        rows.append((index, timestamp, result))
        if writer is not None:
          writer.write(annotate_frame(frame, result, detector.threshold, smoothing_window))
        if log_every and len(rows) % log_every == 0:
          now = time.perf_counter()
          logging.info("frame %d: %.1f fps (last %d frames), %d alarms so far", index,
                       log_every / max(now - window_start, 1e-9), log_every,
                       sum(r.alarm for _, _, r in rows))
          window_start = now
    except video_io.DecodeStopped as e:
      if not rows:
        raise layout.DataError(f"No frame of {input_path!r} could be read: {e.reason}") from e
      stopped_at = e.index
      logging.warning("%s; writing the results of the %d frames read.", e, len(rows))
  finally:
    if writer is not None:
      writer.close()
  elapsed = time.perf_counter() - start

  scores_csv = os.path.join(output_dir, SCORES_FILE)
  plot_png = os.path.join(output_dir, PLOT_FILE)
  write_detection_csv(scores_csv, rows)
  plot_detection(plot_png, rows, detector.threshold, os.path.basename(input_path.rstrip("/")))
  summary = DetectionSummary(
      frames=len(rows), scored=sum(r.score is not None for _, _, r in rows),
      alarms=sum(r.alarm for _, _, r in rows), mean_fps=len(rows) / max(elapsed, 1e-9),
      threshold=detector.threshold, stopped_at=stopped_at, scores_csv=scores_csv,
      plot_png=plot_png, annotated_video=video_path)
  logging.info("frames=%d scored=%d alarms=%d mean_fps=%.1f%s; wrote %s", summary.frames,
               summary.scored, summary.alarms, summary.mean_fps,
               "" if stopped_at is None else f" (decoding stopped at frame {stopped_at})",
               output_dir)
  return summary
