"""Checking a frames-layout dataset: video and frame counts, and labels against test videos."""

import dataclasses
from typing import Optional

from absl import logging

from daml_tf.data import labels as labels_lib
from daml_tf.data import layout
from daml_tf.data import registry
from daml_tf.data.prepare import common
from daml_tf.errors import DataError


def verify(root: str, dataset: str, expected: Optional[common.ExpectedCounts] = None,
           check_counts: bool = True, label_file: str = "") -> common.Summary:
  """Checks a frames-layout dataset: counts and labels.

  Args:
    root: the dataset root (holding training/frames and testing/frames).
    dataset: registry name.
    expected: counts to require; None: common.default_expected_counts(dataset).
    check_counts: False skips the count check (the labels are still checked).
    label_file: the label file; empty: `<root>/<spec.label_file>`, else the packaged one.

  Returns:
    A Summary of the dataset.

  Raises:
    DataError: a split is missing or empty, a count differs from the expected one (the message
      lists every difference), or the labels do not fit the test videos (naming the video).
  """
  spec = registry.get_spec(dataset)
  train = layout.list_videos(root, "training", spec)
  test = layout.list_videos(root, "testing", spec)
  found = common.ExpectedCounts(
      train_videos=len(train), train_frames=sum(v.num_frames for v in train),
      test_videos=len(test), test_frames=sum(v.num_frames for v in test))
  if check_counts:
    expected = common.default_expected_counts(dataset) if expected is None else expected
    differences = [
        f"{field.name.replace('_', ' ')}: expected {getattr(expected, field.name)}, found "
        f"{getattr(found, field.name)}"
        for field in dataclasses.fields(common.ExpectedCounts)
        if getattr(expected, field.name) is not None
        and getattr(expected, field.name) != getattr(found, field.name)]
    if differences:
      raise DataError(
          f"Dataset {root!r} does not have the counts of {dataset!r}: "
          f"{'; '.join(differences)}. An incomplete or different download? (Library callers "
          f"can pass other expected counts; the command line has --nocheck_counts.)")
  label_path = labels_lib.find_label_file(spec, root, label_file)
  frame_labels = labels_lib.load_labels(label_path, spec.label_format, test)
  summary = common.Summary(
      root=root, label_file=label_path, train_videos=found.train_videos,
      train_frames=found.train_frames, test_videos=found.test_videos,
      test_frames=found.test_frames,
      anomalous_frames=int(sum(int(l.sum()) for l in frame_labels)))
  logging.info("Verified %s: %d training videos (%d frames), %d test videos (%d frames, %d "
               "anomalous), labels %s.", root, summary.train_videos, summary.train_frames,
               summary.test_videos, summary.test_frames, summary.anomalous_frames, label_path)
  return summary
