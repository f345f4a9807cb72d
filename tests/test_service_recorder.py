"""daml_tf.service.recorder: event clips and snapshots, and what a killed process leaves.

Frames are added as fast as the test can: tests that count the frames of a clip give the
recorder a queue long enough for the whole stream (max_queued_frames=BURST), so that what they
see does not depend on the speed of the writer thread; dropping is tested apart.

The frames are numbered: frame i is gray, its top half at level 8 + 16 * (i // 16) and its
bottom half at 8 + 16 * (i % 16), so a decoded frame tells its index (256 of them) despite the
encoder's losses. Annotated frames add a red border, which a decoded clip shows or not.
"""

import glob
import os
import pathlib
import signal
import subprocess
import sys
import time

import av
import numpy as np
from PIL import Image
import pytest

from daml_tf.service import recorder

REPO = pathlib.Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 64, 96
FPS = 10.0
BURST = 1000


def numbered_frame(index: int) -> np.ndarray:
  frame = np.empty((HEIGHT, WIDTH, 3), np.uint8)
  frame[:HEIGHT // 2] = 8 + 16 * (index // 16)
  frame[HEIGHT // 2:] = 8 + 16 * (index % 16)
  return frame


def annotate(frame: np.ndarray) -> np.ndarray:
  annotated = frame.copy()
  for border in (np.s_[:4], np.s_[-4:], np.s_[:, :4], np.s_[:, -4:]):
    annotated[border] = (255, 0, 0)
  return annotated


def frame_index(frame: np.ndarray) -> int:
  """The index of a decoded numbered frame (read away from the border and the middle)."""
  top = frame[8:HEIGHT // 2 - 8, 16:-16].mean()
  bottom = frame[HEIGHT // 2 + 8:-8, 16:-16].mean()
  return int(round((top - 8) / 16)) * 16 + int(round((bottom - 8) / 16))


def decode(path):
  """(indices, times, red_border) of every frame that decodes, stopping quietly where a
  truncated file does."""
  indices, times, red = [], [], []
  try:
    with av.open(str(path)) as container:
      for frame in container.decode(video=0):
        pixels = frame.to_ndarray(format="rgb24")
        indices.append(frame_index(pixels))
        times.append(frame.time)
        corner = pixels[1, 1].astype(int)
        red.append(corner[0] > 150 and corner[1] < 100)
  except av.error.FFmpegError:
    pass
  return indices, times, red


def assert_jpeg(path, index=None):
  with Image.open(path) as image:
    assert image.format == "JPEG"
    pixels = np.asarray(image.convert("RGB"))
  assert pixels.shape == (HEIGHT, WIDTH, 3)
  if index is not None:
    assert frame_index(pixels) == index


def files_of(folder):
  return sorted(os.listdir(folder))


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
@pytest.mark.parametrize("start_before_frame", [False, True])
def test_clip_holds_the_pre_capture_the_event_and_the_post_capture(tmp_path, codec,
                                                                  start_before_frame):
  """An event from 3 s to 5 s at 10 fps, 1 s before and after: frames 20 to 60, annotated
  lazily (only those), with their own times; clip.mp4 appears only once the clip is done."""
  annotated_calls = []

  def lazy(index):
    def draw():
      annotated_calls.append(index)
      return annotate(numbered_frame(index))
    return draw

  rec = recorder.EventRecorder(str(tmp_path), FPS, pre_capture_s=1.0, post_capture_s=1.0,
                               codec=codec, max_queued_frames=BURST)
  folder = tmp_path / "events" / "ev1"
  try:
    assert rec.ring_size == 11
    for i in range(100):
      t = i / FPS
      if i == 30 and start_before_frame:
        rec.start("ev1", t)
      rec.add_frame(t, numbered_frame(i), lazy(i))
      if i == 30 and not start_before_frame:
        rec.start("ev1", t)
      if i == 50:
        rec.end("ev1", t)
      if i == 55:
        assert rec.wait_idle(20)
        # Mid post-capture: the clip is written under its temporary name only.
        assert files_of(folder) == ["clip.mp4.part"]
        assert rec.open_event_ids() == {"ev1"}
      if i == 61:
        assert rec.wait_idle(20)
        assert files_of(folder) == ["clip.mp4"]
        assert rec.open_event_ids() == set()
  finally:
    assert rec.close(30)
  indices, times, red = decode(folder / "clip.mp4")
  assert indices == list(range(20, 61))
  np.testing.assert_allclose(times, [(i - 20) / FPS for i in indices], atol=1e-3)
  assert all(red)
  assert sorted(annotated_calls) == list(range(20, 61))
  stats = rec.stats()
  assert (stats["frames_encoded"], stats["frames_dropped"], stats["clips_finished"]) == (41, 0, 1)
  assert files_of(folder) == ["clip.mp4"]


def test_clean_clips_and_variable_frame_times(tmp_path):
  """annotated_clip=False: the clean frames, never annotated; a gap in the frame times (a
  camera that dropped frames) stays a gap in the clip."""
  rec = recorder.EventRecorder(str(tmp_path), FPS, 0.5, 0.0, max_queued_frames=BURST,
                               annotated_clip=False)
  kept = [i for i in range(40) if not 12 <= i < 17]

  def never():
    raise AssertionError("annotated although annotated_clip=False")

  with rec:
    for i in kept:
      rec.add_frame(i / FPS, numbered_frame(i), never)
      if i == 10:
        rec.start("gap", i / FPS)
      if i == 25:
        rec.end("gap", i / FPS)
  indices, times, red = decode(tmp_path / "events" / "gap" / "clip.mp4")
  assert indices == [i for i in kept if 5 <= i <= 25] and not any(red)
  np.testing.assert_allclose(times, [(i - 5) / FPS for i in indices], atol=1e-3)


def test_a_failing_annotation_leaves_the_clean_frame_in_the_clip(tmp_path):
  rec = recorder.EventRecorder(str(tmp_path), FPS, 0.0, 0.0, max_queued_frames=BURST)

  def broken(index):
    if index % 2:
      return lambda: 1 / 0
    return lambda: numbered_frame(index).astype(np.float32)  # Not uint8.

  with rec:
    rec.add_frame(0.0, numbered_frame(0), annotate(numbered_frame(0)))
    rec.start("broken", 0.0)
    for i in range(1, 5):
      rec.add_frame(i / FPS, numbered_frame(i), broken(i))
    rec.end("broken", 4 / FPS)
  indices, _, red = decode(tmp_path / "events" / "broken" / "clip.mp4")
  assert indices == [0, 1, 2, 3, 4] and red == [True, False, False, False, False]


def test_snapshots_are_jpegs_replaced_when_called_again(tmp_path):
  rec = recorder.EventRecorder(str(tmp_path), FPS, 1.0, 1.0)
  folder = tmp_path / "events" / "ev2"
  with rec:
    first = rec.snapshot("ev2", numbered_frame(3), annotate(numbered_frame(3)))
    assert rec.wait_idle(20)
    assert files_of(folder) == ["snapshot-clean.jpg", "snapshot.jpg"]
    assert (folder / "snapshot.jpg").read_bytes() == first
    assert_jpeg(folder / "snapshot.jpg", 3)
    assert_jpeg(folder / "snapshot-clean.jpg", 3)
    second = rec.snapshot("ev2", numbered_frame(77), annotate(numbered_frame(77)))
    assert rec.wait_idle(20)
    assert (folder / "snapshot.jpg").read_bytes() == second != first
    assert_jpeg(folder / "snapshot.jpg", 77)
    assert_jpeg(folder / "snapshot-clean.jpg", 77)
    with Image.open(folder / "snapshot.jpg") as image:
      assert image.getpixel((1, 1))[0] > 150  # Annotated.
    with Image.open(folder / "snapshot-clean.jpg") as image:
      assert image.getpixel((1, 1))[0] < 150  # Clean.
  assert files_of(folder) == ["snapshot-clean.jpg", "snapshot.jpg"]
  assert rec.stats()["snapshots_written"] == 2


def test_close_finishes_open_clips_and_cuts_post_captures(tmp_path):
  """Two overlapping events (the second starts in the first's post-capture); close() while
  the first is in its post-capture and the second still open."""
  rec = recorder.EventRecorder(str(tmp_path), FPS, 1.0, 2.0, max_queued_frames=BURST)
  for i in range(50):
    rec.add_frame(i / FPS, numbered_frame(i))
    if i == 20:
      rec.start("a", i / FPS)
    if i == 30:
      rec.end("a", i / FPS)
    if i == 35:
      rec.start("b", i / FPS)
  assert rec.open_event_ids() == {"a", "b"}
  assert rec.close(30)
  assert decode(tmp_path / "events" / "a" / "clip.mp4")[0] == list(range(10, 50))
  assert decode(tmp_path / "events" / "b" / "clip.mp4")[0] == list(range(25, 50))
  assert rec.open_event_ids() == set()
  # After close: ignored.
  rec.add_frame(5.0, numbered_frame(50))
  rec.start("c", 5.0)
  assert not (tmp_path / "events" / "c").exists()


def test_a_slow_writer_drops_frames_and_never_stalls_the_caller(tmp_path):
  """The annotation takes 50 ms a frame in the writer thread, frames come every 0 ms: the
  caller's calls stay fast, the queue stays within its bound, the overflow is counted."""
  rec = recorder.EventRecorder(str(tmp_path), FPS, 0.0, 0.0, max_queued_frames=3)

  def slow(index):
    def draw():
      time.sleep(0.05)
      return numbered_frame(index)
    return draw

  longest = 0.0
  with rec:
    rec.add_frame(0.0, numbered_frame(0), slow(0))
    rec.start("slow", 0.0)
    for i in range(1, 60):
      begin = time.perf_counter()
      rec.add_frame(i / FPS, numbered_frame(i), slow(i))
      longest = max(longest, time.perf_counter() - begin)
      assert rec.stats()["queued_frames"] <= 3
    rec.end("slow", 59 / FPS)
  print(f"longest add_frame: {longest * 1e3:.2f} ms")
  assert longest < 0.02
  stats = rec.stats()
  indices = decode(tmp_path / "events" / "slow" / "clip.mp4")[0]
  assert stats["frames_dropped"] > 0
  assert len(indices) == stats["frames_encoded"] == 60 - stats["frames_dropped"]
  assert indices == sorted(set(indices)) and indices[0] == 0 and indices[-1] <= 59


def test_event_ids_must_name_a_folder_and_frames_be_uint8(tmp_path):
  rec = recorder.EventRecorder(str(tmp_path), FPS, 1.0, 1.0)
  with rec:
    for bad in ("", "..", "../x", "a/b", ".hidden", "-x", "a b"):
      with pytest.raises(ValueError, match="Bad event id"):
        rec.start(bad, 0.0)
      with pytest.raises(ValueError, match="Bad event id"):
        rec.snapshot(bad, numbered_frame(0), numbered_frame(0))
    with pytest.raises(ValueError, match="uint8"):
      rec.add_frame(0.0, np.zeros((HEIGHT, WIDTH, 3), np.float32))
  assert recorder.check_event_id("1718000000.500000-x7k2qa") == "1718000000.500000-x7k2qa"
  assert not (tmp_path / "events").exists()


def test_the_module_does_not_import_tensorflow():
  code = ("import sys; import daml_tf.service.recorder; "
          "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr


# The child of the kill test: event "done" is recorded whole (clip 10..40); event "open" starts
# at frame 80 (clip from 70), then frames come at 10 fps until the test kills the process.
_CHILD = """
import sys, time
from daml_tf.service import recorder
from test_service_recorder import BURST, FPS, annotate, numbered_frame

rec = recorder.EventRecorder(sys.argv[1], FPS, 1.0, 1.0, max_queued_frames=BURST)
for i in range(80):
  rec.add_frame(i / FPS, numbered_frame(i), annotate(numbered_frame(i)))
  if i == 20:
    rec.start("done", i / FPS)
    rec.snapshot("done", numbered_frame(i), annotate(numbered_frame(i)))
  if i == 30:
    rec.end("done", i / FPS)
rec.start("open", 79 / FPS)
rec.snapshot("open", numbered_frame(79), annotate(numbered_frame(79)))
for i in range(80, 256):
  rec.add_frame(i / FPS, numbered_frame(i), annotate(numbered_frame(i)))
  if i == 110:
    rec.wait_idle()
    print("ready", flush=True)
  if i > 110:
    time.sleep(1 / FPS)
time.sleep(600)
"""


def test_sigkill_mid_clip_leaves_finished_events_whole_and_a_playable_prefix(tmp_path):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
  child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path)], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    line = child.stdout.readline()
    assert line.strip() == "ready", child.stderr.read() if child.poll() is not None else line
    time.sleep(0.5)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
  finally:
    if child.poll() is None:
      child.kill()
      child.wait()
  events = tmp_path / "events"
  assert files_of(events) == ["done", "open"]
  done, open_ = events / "done", events / "open"
  # The finished event: complete files under their final names only.
  assert files_of(done) == ["clip.mp4", "snapshot-clean.jpg", "snapshot.jpg"]
  assert decode(done / "clip.mp4")[0] == list(range(10, 41))
  assert_jpeg(done / "snapshot.jpg", 20)
  assert_jpeg(done / "snapshot-clean.jpg", 20)
  # The open event: no clip.mp4, a .part that plays from the first pre-capture frame on, at
  # least to the last keyframe before "ready" (frame 110, keyframes every 10 frames).
  assert files_of(open_) == ["clip.mp4.part", "snapshot-clean.jpg", "snapshot.jpg"]
  indices, _, red = decode(open_ / "clip.mp4.part")
  assert len(indices) >= 30 and all(red)
  assert indices == list(range(69, 69 + len(indices)))
  assert_jpeg(open_ / "snapshot.jpg", 79)
  assert not glob.glob(str(events / "**" / "*.tmp"), recursive=True)
  print(f"frames in the killed clip's prefix: {len(indices)} (frames 69..{indices[-1]})")
