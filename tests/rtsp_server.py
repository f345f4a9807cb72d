"""An RTSP server on 127.0.0.1 for the tests: GStreamer's RTSP server sending an H.264 MPEG-TS
file as rtsp://127.0.0.1:PORT/live, paced in real time, to any number of clients.

Run with the system Python, which has the GObject bindings (Debian: python3-gi,
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,bad}; `make test` installs them):

  /usr/bin/python3 tests/rtsp_server.py VIDEO.ts PORT

Prints "ready" once it listens. Each client session reads the file from its start; the stream
ends with the file (a client then sees the end of the stream).
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # pylint: disable=g-import-not-at-top

MOUNT = "/live"


def main(video: str, port: str) -> None:
  Gst.init(None)
  server = GstRtspServer.RTSPServer.new()
  server.set_address("127.0.0.1")
  server.set_service(port)
  factory = GstRtspServer.RTSPMediaFactory.new()
  # The H.264 stream is sent as it is (no re-encoding); config-interval=1 repeats SPS/PPS so a
  # client joining at any key frame can decode.
  factory.set_launch(f"( filesrc location={video} ! tsdemux ! h264parse ! "
                     "rtph264pay name=pay0 pt=96 config-interval=1 )")
  factory.set_shared(True)
  server.get_mount_points().add_factory(MOUNT, factory)
  if not server.attach(None):
    sys.exit(f"cannot listen on 127.0.0.1:{port}")
  print("ready", flush=True)
  GLib.MainLoop().run()


if __name__ == "__main__":
  main(*sys.argv[1:3])
