"""Converts an official benchmark download into the common frames layout and checks it.

  python -m daml_tf.data.prepare --dataset=ped2 --source=DOWNLOAD --output_dir=DIR

(DOWNLOAD: the unpacked official download, e.g. UCSD_Anomaly_Dataset.v1p2/) writes

  <output_dir>/training/frames/<video>/000.<png|jpg> ...
  <output_dir>/testing/frames/<video>/000.<png|jpg> ...
  <output_dir>/<spec.label_file>       in the format the registry declares for the dataset

and then verifies video and frame counts against the dataset's expected counts and every test
video's frame count against its labels. What each release looks like and how it is converted:

  ped1, ped2    <source>[/UCSDpedN]/Train/Train001/001.tif, Test/Test001/..., Test/UCSDpedN.m.
                TIFFs are decoded with Pillow (the decoder the pipeline would use on them) and
                written as lossless PNG: identical pixels, fewer bytes (the UCSD TIFFs are
                uncompressed), and read by TensorFlow's core decoder, so training needs no
                host-side decoding and none of its per-file overhead. Train001 -> 01.
                The `gt{i} = [a:b, c:d];` lines of UCSDpedN.m become the `gt` cell of the .mat.
                `*_gt` folders (pixel masks) and non-TIFF files are ignored.
  avenue        <source>[/Avenue Dataset]/training_videos/01.avi, testing_videos/01.avi,
                testing_label_mask/1_label.mat (also looked for under ground_truth_demo/).
                Videos are decoded with PyAV and written as JPEG (quality 95: the source is
                already lossy, PNG would be several times larger for no visible gain). A frame is
                anomalous when its `volLabel` mask has any pixel set; keys 01..21.
  shanghaitech  <source>[/shanghaitech]/training/videos/01_001.avi (decoded as Avenue's),
                testing/frames/01_0014/000.jpg (copied byte for byte, renumbered in natural
                order), testing/test_frame_mask/01_0014.npy (collected into one .npz).

A source that already is in the frames layout (training/frames and testing/frames) needs no
preparation: it is verified in place and nothing is written (point --data_dir at it).

Re-running is cheap and safe: each video is written into `<output_dir>/.prepare_tmp/` and renamed
into place when complete, and the label file likewise, so an existing video folder or label file
is complete and is kept (a folder whose frame count differs from a frame-file source is redone).
A run that finds everything in place writes nothing. Only local filesystems are supported for
writing. Library code calls `prepare` or `verify`; the entry point is `__main__.py`.

A camera's own footage is the other input: `--videos=<folder | glob | file>` instead of
--dataset/--source writes the frames layout of the `custom` dataset (training frames and an
optional held-out part for calibration) from video files; see footage.py.

One module per release format (ucsd.py, avenue.py, shanghaitech.py) turns a release into video
jobs and a label writer; common.py holds what they share, convert.py runs them, verify.py checks
the result. A new release format is one module and one line in convert.CONVERTERS (and its
ReleaseFormat in common.RELEASE_FORMATS).
"""

from daml_tf.data.prepare.common import ExpectedCounts
from daml_tf.data.prepare.common import RELEASE_FORMATS
from daml_tf.data.prepare.common import Summary
from daml_tf.data.prepare.common import default_expected_counts
from daml_tf.data.prepare.common import release_format
from daml_tf.data.prepare.convert import TMP_DIR
from daml_tf.data.prepare.convert import prepare
from daml_tf.data.prepare.ucsd import parse_ucsd_ground_truth
from daml_tf.data.prepare.verify import verify

__all__ = ["ExpectedCounts", "RELEASE_FORMATS", "Summary", "TMP_DIR", "default_expected_counts",
           "parse_ucsd_ground_truth", "prepare", "release_format", "verify"]
