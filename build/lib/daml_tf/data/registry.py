"""The one registry of datasets: name -> layout, image size, channels, clip geometry, labels.

Nothing else in the project compares dataset names; code asks `get_spec(name)` and reads fields.
"""

import dataclasses
from typing import Optional, Tuple

from daml_tf.errors import UnknownDatasetError

# Label file formats understood by `daml_tf.data.labels.load_labels`.
LABELS_UCSD_INTERVALS = "ucsd_intervals"  # .mat, key `gt`: 1xN cell of 2xK 1-based [start; end].
LABELS_PER_VIDEO_MAT = "per_video_mat"  # .mat, one 1xN 0/1 array per video, keyed 01..NN.
LABELS_NUMPY = "numpy"  # .npz keyed by video name, or a folder of <video>.npy.

# Image files a frames folder may hold (any case). TIFF is decoded by Pillow.
TIFF_EXTENSIONS = (".tif", ".tiff")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png") + TIFF_EXTENSIONS + (".bmp",)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What the pipeline needs to know about one benchmark.

  Attributes:
    name: registry key, also the conventional folder name under a data root.
    image_size: (height, width) frames are resized to.
    channels: 1 (converted to gray) or 3.
    time_steps: default k, the number of input frames of a clip.
    interval: default gap in frames between consecutive input frames.
    delta: default gap between the last input frame and the target frame.
    label_file: name of the frame-label file; looked for in the dataset root first,
      then among the labels shipped in `daml_tf/data/labels/`.
    label_format: one of the LABELS_* constants.
    frame_extensions: image file endings accepted in the frames layout.
    num_test_videos: expected number of test videos (None: not checked).
    num_test_frames: expected total number of test frames (None: not checked).
  """

  name: str
  image_size: Tuple[int, int]
  channels: int
  time_steps: int
  interval: int
  delta: int
  label_file: str
  label_format: str
  frame_extensions: Tuple[str, ...] = IMAGE_EXTENSIONS
  num_test_videos: Optional[int] = None
  num_test_frames: Optional[int] = None


_REGISTRY = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="ped1", image_size=(128, 192), channels=1, time_steps=8, interval=2,
            delta=6, label_file="ped1.mat", label_format=LABELS_UCSD_INTERVALS,
            num_test_videos=36, num_test_frames=7200),
        DatasetSpec(
            name="ped2", image_size=(128, 192), channels=1, time_steps=8, interval=2,
            delta=6, label_file="ped2.mat", label_format=LABELS_UCSD_INTERVALS,
            num_test_videos=12, num_test_frames=2010),
        DatasetSpec(
            name="avenue", image_size=(128, 224), channels=3, time_steps=6, interval=2,
            delta=6, label_file="avenue.mat", label_format=LABELS_PER_VIDEO_MAT,
            num_test_videos=21, num_test_frames=15324),
        DatasetSpec(
            name="shanghaitech", image_size=(128, 224), channels=3, time_steps=6,
            interval=2, delta=6, label_file="shanghaitech_test_frame_mask.npz",
            label_format=LABELS_NUMPY, num_test_videos=107, num_test_frames=40791),
        # The embedded, generated dataset (daml_tf.data.synthetic). Its label file is
        # written beside the frames by the generator.
        DatasetSpec(
            name="synthetic", image_size=(64, 96), channels=1, time_steps=4, interval=2,
            delta=2, label_file="synthetic.npz", label_format=LABELS_NUMPY),
        # A camera's own footage (`python -m daml_tf.data.prepare --videos=...`). Size,
        # channels and clip geometry are those of the shipped pretrained/ped2_cpu, so
        # `train --init_from=pretrained/ped2_cpu` needs no geometry flags; any of them can be
        # changed with --image_height/--image_width/--channels/... Training needs no labels;
        # evaluation reads testing/frames/ and labels.npz ({video: 0/1 per frame}).
        DatasetSpec(
            name="custom", image_size=(64, 96), channels=1, time_steps=4, interval=2,
            delta=4, label_file="labels.npz", label_format=LABELS_NUMPY),
    )
}


def get_spec(name: str) -> DatasetSpec:
  """Returns the spec of dataset `name`; raises UnknownDatasetError naming the known ones."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise UnknownDatasetError(
        f"Unknown dataset {name!r}; known datasets: {', '.join(sorted(_REGISTRY))}."
    ) from None


def dataset_names() -> Tuple[str, ...]:
  return tuple(sorted(_REGISTRY))
