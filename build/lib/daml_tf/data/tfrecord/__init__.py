"""Training frames as sharded TFRecords: format.py (file names), writer.py, reader.py.

`daml_tf.data.to_tfrecord` decodes the training split once into

    <dir>/train-00000-of-00008.tfrecord ...   the frames, uint8 at model resolution
    <dir>/background.npy                       float32 [H, W, C], pipeline.compute_background
    <dir>/index.json                           dataset, geometry, videos, shards (written last)

and `training_dataset` cuts the same clips from them as `pipeline.training_dataset` cuts from the
frames, for any clip geometry: records hold plain frames, not clips.

A record (a tf.train.Example) holds up to `frames_per_record` consecutive frames of one video:
its video's position in the training split (`video_index`), name (`video`), the index of its
first frame in the video (`first_frame`), `num_frames`, `height`, `width`, `channels` and the
raw bytes (`frames`, uint8 [num_frames, height, width, channels], row-major). A video's records
are consecutive and in frame order within one shard, so a reader carries the last frames of one
record over to the next and no clip is lost at record boundaries; and shards can be divided
among workers by file.

Frames are the frames pipeline's (decoded, converted to the model's channels, resized
bilinearly) rounded to 8 bits: a frame already at model resolution (and channels) comes back
bit for bit, a resized one within half a gray level. Every file operation goes through
daml_tf.fileio, so the directory may be on s3:// (fsspec), gs:// or any fsspec scheme.
"""

from daml_tf.data.tfrecord.format import BACKGROUND_FILE
from daml_tf.data.tfrecord.format import DEFAULT_FRAMES_PER_RECORD
from daml_tf.data.tfrecord.format import DEFAULT_SHARDS
from daml_tf.data.tfrecord.format import INDEX_FILE
from daml_tf.data.tfrecord.format import shard_name
from daml_tf.data.tfrecord.reader import check_index
from daml_tf.data.tfrecord.reader import load_background
from daml_tf.data.tfrecord.reader import load_index
from daml_tf.data.tfrecord.reader import training_dataset
from daml_tf.data.tfrecord.writer import assign_shards
from daml_tf.data.tfrecord.writer import convert
from daml_tf.data.tfrecord.writer import write_tfrecords

__all__ = ["BACKGROUND_FILE", "DEFAULT_FRAMES_PER_RECORD", "DEFAULT_SHARDS", "INDEX_FILE",
           "assign_shards", "check_index", "convert", "load_background", "load_index",
           "shard_name", "training_dataset", "write_tfrecords"]
