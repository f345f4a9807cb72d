"""daml_tf.inference.sources: files and folders read as video_io reads them, and live streams
from real servers on 127.0.0.1 (the ffmpeg CLI over UDP and HTTP, GStreamer's RTSP server),
killed and started again mid-stream."""

import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import testing
from daml_tf import errors
from daml_tf.data import video_io
from daml_tf.inference import sources

FPS = 25
# Short waits so that a test takes seconds, yet long enough for a loaded 2-core machine.
LIVE = sources.SourceOptions(read_timeout_s=3.0, reconnect_initial_s=0.2, reconnect_max_s=1.0)
DOWN_S = 1.0  # How long a killed server stays down.
# UDP has no connection: a sender that is gone is only noticed by the read timeout, and one
# back within it was a pause, not a drop (the same stream to the receiver).
UDP = sources.SourceOptions(read_timeout_s=2.0, reconnect_initial_s=0.2, reconnect_max_s=1.0)
UDP_DOWN_S = 3.0


@pytest.fixture(scope="module")
def stream_video(tmp_path_factory):
  """4 s of H.264 in MPEG-TS: 100 RGB frames of 32x48 at 25 frames/s."""
  folder = tmp_path_factory.mktemp("stream")
  return testing.write_stream_video(folder / "camera.ts", testing.moving_frames(100, rgb=True),
                                    FPS)


class _Reader:
  """Reads a source in a thread, all the time, as the detection loop does (a stream's read
  timeout runs only while someone waits for its next packet)."""

  def __init__(self, source):
    self.source = source
    self.items = []
    self.error = None
    self._halt = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _run(self):
    try:
      for item in self.source:
        self.items.append(item)
        if self._halt.is_set():
          break
    except Exception as e:  # pylint: disable=broad-except
      self.error = e
    finally:
      self.source.close()  # In the thread that iterates it.

  def halt(self):
    """Stops reading after the next item and closes the source; the reading must have ended
    without an error (a stream test that reads on after its checks still fails on one)."""
    self._halt.set()
    self.join()
    assert self.error is None, f"the reader failed: {self.error!r}"

  def frames(self):
    return [item for item in self.items if not isinstance(item, sources.Gap)]

  def wait_for(self, frames, timeout=60.0):
    """Waits until `frames` frames were read in all; returns the items so far."""
    deadline = time.monotonic() + timeout
    while len(self.frames()) < frames:
      assert self.error is None, self.error
      assert time.monotonic() < deadline, f"only {len(self.frames())} of {frames} frames came"
      time.sleep(0.02)
    return list(self.items)

  def join(self, timeout=60.0):
    self._thread.join(timeout)
    assert not self._thread.is_alive(), "the source did not end"


def _check_live_items(items, start_index=0):
  """Frames have consecutive indices and wall-clock timestamps; a Gap announces the index of
  the frame after it. Returns the gaps."""
  frames = [item for item in items if not isinstance(item, sources.Gap)]
  assert [index for index, _, _ in frames] == list(range(start_index,
                                                         start_index + len(frames)))
  stamps = [timestamp for _, timestamp, _ in frames]
  assert stamps == sorted(stamps) and stamps[0] >= 0
  assert all(frame.shape == (testing.HEIGHT, testing.WIDTH, 3) and frame.dtype == np.uint8
             for _, _, frame in frames)
  gaps = [(position, item) for position, item in enumerate(items)
          if isinstance(item, sources.Gap)]
  for position, gap in gaps:
    assert items[position + 1][0] == gap.index
  return [gap for _, gap in gaps]


def _open_when_listening(url, options, timeout=30.0, stop=None):
  """open_source, retried while the server process is still starting (connection refused)."""
  deadline = time.monotonic() + timeout
  while True:
    try:
      return sources.open_source(url, options, stop)
    except errors.DataError:
      if time.monotonic() > deadline:
        raise
      time.sleep(0.1)


def test_files_and_folders_are_read_as_video_io_reads_them(tmp_path):
  frames = testing.moving_frames(6, rgb=True)
  video = testing.write_video(tmp_path / "clip.avi", frames, fps=10)
  folder = testing.write_pngs(tmp_path / "frames", frames)
  for path, fps in ((video, 10.0), (folder, 4.0)):
    source = sources.open_source(path, sources.SourceOptions(fps=4.0))
    assert not source.live and source.fps == fps
    read = list(source)
    expected = list(video_io.iter_frames(path, 4.0))
    assert [(i, t) for i, t, _ in read] == [(i, t) for i, t, _ in expected]
    for (_, _, a), (_, _, b) in zip(read, expected):
      np.testing.assert_array_equal(a, b)
  with pytest.raises(FileNotFoundError, match="nowhere.mp4"):
    sources.open_source(str(tmp_path / "nowhere.mp4"))


def test_kinds_of_input_and_options():
  assert sources.is_live("rtsp://10.0.0.2:554/stream1")
  assert sources.is_live("UDP://127.0.0.1:5999") and sources.is_live("srt://host:9000")
  assert sources.is_live("/dev/null")  # A character device, opened as V4L2.
  assert not sources.is_live("s3://bucket/video.mp4") and not sources.is_live("video.avi")
  assert (sources.redact("rtsp://admin:secret@10.0.0.2/s1") == "rtsp://admin:***@10.0.0.2/s1")
  assert sources.redact("rtsp://10.0.0.2/s1") == "rtsp://10.0.0.2/s1"
  assert sources.parse_ffmpeg_options(["video_size=640x480", " framerate = 15"]) == (
      ("video_size", "640x480"), ("framerate", "15"))
  with pytest.raises(errors.ConfigError, match="key=value"):
    sources.parse_ffmpeg_options(["video_size"])
  for bad in (dict(read_timeout_s=0), dict(reconnect_initial_s=5, reconnect_max_s=1),
              dict(max_reconnects=-1), dict(rtsp_transport="carrier-pigeon")):
    with pytest.raises(errors.ConfigError):
      sources.SourceOptions(**bad)


def test_a_stream_that_cannot_be_opened_names_its_url():
  options = sources.SourceOptions(read_timeout_s=0.5)
  silent = f"udp://127.0.0.1:{testing.free_port(socket.SOCK_DGRAM)}"
  with pytest.raises(errors.DataError, match=f"{silent}.*no data within --read_timeout_s=0.5"):
    sources.open_source(silent, options)
  refused = f"http://user:secret@127.0.0.1:{testing.free_port()}/live.ts"
  with pytest.raises(errors.DataError, match="Connection refused") as error:
    sources.open_source(refused, options)
  assert "user:***@" in str(error.value) and "secret" not in str(error.value)


def test_a_file_served_over_http_ends_at_its_end(stream_video):
  """A server that states the length (a file, not a stream): read once, no reconnection."""
  port = testing.free_port()
  folder, name = os.path.split(stream_video)
  server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                             "127.0.0.1", "--directory", folder],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    source = _open_when_listening(f"http://127.0.0.1:{port}/{name}", LIVE)
    assert not source.live and source.fps == FPS
    items = list(source)
  finally:
    testing.stop_server(server)
  assert not _check_live_items(items) and len(items) == 100


def _check_resumed(items, before, down_s):
  """One gap, after the first `before` frames, at least `down_s` long."""
  gaps = _check_live_items(items)
  assert len(gaps) == 1 and gaps[0].index >= before
  # Half: how soon a drop is noticed depends on the load of the machine.
  assert gaps[0].gap_s >= 0.5 * down_s and gaps[0].attempts >= 1
  return gaps[0]


def test_udp_stream_comes_back_after_its_sender_restarts(stream_video):
  url = f"udp://127.0.0.1:{testing.free_port(socket.SOCK_DGRAM)}"
  with testing.Server(lambda: testing.serve_ffmpeg(stream_video, url)) as server:
    opened = time.monotonic()
    source = sources.open_source(url, UDP)
    assert source.live and source.fps == FPS
    reader = _Reader(source)
    before = reader.wait_for(30)
    assert before[-1][1] <= time.monotonic() - opened  # Wall-clock seconds since the open.
    server.restart(UDP_DOWN_S)
    items = reader.wait_for(len(reader.frames()) + 20)
    reader.halt()
  gap = _check_resumed(items, 30, UDP_DOWN_S)
  assert "no data within --read_timeout_s=2" in gap.reason


def test_a_udp_sender_back_within_the_read_timeout_is_a_clock_jump(stream_video):
  """No reopen, but the new sender's clock starts over: a Gap all the same."""
  url = f"udp://127.0.0.1:{testing.free_port(socket.SOCK_DGRAM)}"
  with testing.Server(lambda: testing.serve_ffmpeg(stream_video, url)) as server:
    reader = _Reader(sources.open_source(url, LIVE))  # A 3 s read timeout...
    reader.wait_for(30)
    server.restart(DOWN_S)  # ...and 1 s away.
    items = reader.wait_for(len(reader.frames()) + 20)
    reader.halt()
  gaps = _check_live_items(items)
  assert len(gaps) == 1 and gaps[0].index >= 30 and gaps[0].attempts == 0
  assert "the stream's clock jumped by -" in gaps[0].reason
  assert gaps[0].gap_s >= 0.5 * DOWN_S


def test_http_stream_comes_back_then_is_given_up(stream_video):
  url = f"http://127.0.0.1:{testing.free_port()}/live.ts"
  # Eight failed reopens in a row are 0.2 + 0.4 + 6 * 0.5 = 3.6 s of waits: more than the server
  # is down in the middle, then given up once it is gone for good.
  options = sources.SourceOptions(read_timeout_s=3.0, reconnect_initial_s=0.2,
                                  reconnect_max_s=0.5, max_reconnects=8)
  with testing.Server(lambda: testing.serve_ffmpeg(stream_video, url)) as server:
    source = _open_when_listening(url, options)
    assert source.live  # ffmpeg sends no length: a stream.
    reader = _Reader(source)
    reader.wait_for(20)
    server.restart(DOWN_S)
    reader.wait_for(len(reader.frames()) + 20)
    # Timed from before the stop: the reader's waits may start before stop() returns.
    lost_at = time.monotonic()
    server.stop()
    reader.join()
  # Refused connections fail at once: the waits, and little more.
  assert 3.6 <= time.monotonic() - lost_at < 15
  _check_resumed(reader.items, 20, DOWN_S)
  assert isinstance(reader.error, sources.SourceLost), reader.error
  assert "8 reopens in a row failed" in str(reader.error) and url in str(reader.error)
  assert reader.error.index == reader.frames()[-1][0] + 1


def test_stop_ends_a_source_waiting_to_reopen(stream_video):
  url = f"http://127.0.0.1:{testing.free_port()}/live.ts"
  server = testing.serve_ffmpeg(stream_video, url)
  stop = threading.Event()
  options = sources.SourceOptions(read_timeout_s=3.0, reconnect_initial_s=30.0,
                                  reconnect_max_s=30.0)
  try:
    reader = _Reader(_open_when_listening(url, options, stop=stop))
    reader.wait_for(5)
    testing.stop_server(server)
    time.sleep(0.5)
    stopped = time.monotonic()
    stop.set()
    reader.join()  # Ends when stop is set, not after the 30 s wait.
  finally:
    testing.stop_server(server)
  assert time.monotonic() - stopped < 5
  assert reader.error is None and not _check_live_items(reader.items)


@pytest.mark.skipif(not testing.rtsp_server_available(),
                    reason="GStreamer's RTSP server is not installed (make test installs it)")
def test_rtsp_stream_over_tcp_comes_back_after_its_server_restarts(stream_video):
  port = testing.free_port()
  url = f"rtsp://127.0.0.1:{port}/live"
  with testing.Server(lambda: testing.serve_rtsp(stream_video, port)) as server:
    source = sources.open_source(url, LIVE)  # RTSP over TCP by default.
    assert source.live and source.fps == FPS
    reader = _Reader(source)
    reader.wait_for(25)
    server.restart(DOWN_S)
    items = reader.wait_for(len(reader.frames()) + 25)
    reader.halt()
  _check_resumed(items, 25, DOWN_S)
