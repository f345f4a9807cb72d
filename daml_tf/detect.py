"""Scores a video, a frames folder or a live stream frame by frame, as a camera delivers them.

`python -m daml_tf.detect --model_dir=runs/demo --input=video.avi --output_dir=out [--annotate]`
`python -m daml_tf.detect --model_dir=runs/demo --input=rtsp://camera/stream --output_dir=out`
`python -m daml_tf.detect --model_dir=runs/demo --input=a.avi --input=b.avi --output_dir=out`
(several cameras; names: [--camera_names=gate,hall])
`python -m daml_tf.detect ... --http=127.0.0.1:8080` (the camera service's page and API)

Writes out/scores.csv (frame,timestamp_s,score,alarm) and out/events.jsonl (one line per alarm
start and end; with --mqtt=host:port/topic also published on MQTT, topic <topic>/<camera>)
as frames are scored, out/scores.png (the last --plot_window frames) at the end
and, with --annotate, out/annotated.mp4 (or .avi) with the error heatmap and the anomaly box.
It stops at the end of the input, at --max_frames or --duration_s, or on SIGINT/SIGTERM (after
the current frame, every file complete, exit status 0). The threshold is --threshold, else
<model_dir>/threshold.json (or the one recorded in an export); with neither only scores are
written. See daml_tf.inference.detection.run_detection.

A live --input (rtsp://, http(s)://, udp://, tcp://, ... or a V4L2 device such as
/dev/video0) is reopened with exponential backoff (--reconnect_initial_s, --reconnect_max_s)
when it ends, fails or sends nothing for --read_timeout_s; the detector starts over after each
gap. With --max_reconnects or --give_up_after_s it gives up at last: the files are complete
and the exit status is 1, so a supervisor that restarts failed services restarts it.

With several --input, one model scores every camera (one encoder and one motion-model call per
step over the cameras' newest frames) and each camera's files go in out/<camera>/; an input
that ends stops only its camera, --max_frames and --duration_s count per camera. See
daml_tf.inference.multicamera.

--model_dir may also be an export of `python -m daml_tf.export`: a serving SavedModel version
(runs/demo/export/1, run through its encode and predict_latent signatures) or a LiteRT export
(runs/demo/export/litert/1, run with the LiteRT interpreter; --litert_precision=float16 picks
the float16-weight flatbuffers). A directory of numbered versions runs the highest.

With --http=host:port, the camera service's page and read-only API (docs/guide/service.md) are
served while detect runs: the live annotated picture, the score chart and the events of every
camera, /healthz and /metrics. Another address than loopback needs the token in
$DAML_HTTP_TOKEN, or --http_allow_unauthenticated.
"""

import dataclasses
from typing import Optional, Tuple

from absl import app
from absl import flags

from daml_tf import cli
from daml_tf import dataclass_flags
from daml_tf.data import video_io
from daml_tf.inference import backends
from daml_tf.inference import detection
from daml_tf.inference import mqtt as mqtt_lib
from daml_tf.inference import multicamera
from daml_tf.inference import sources
from daml_tf.service.web import detect_page

FLAGS = flags.FLAGS
option = dataclass_flags.option
_LIVE = sources.SourceOptions()


@dataclasses.dataclass(frozen=True)
class DetectFlags:
  """detect's command line: one flag per field, each help written here only.

  `to_config` turns it into the detection.DetectConfig the library takes (an MQTT endpoint
  and FFmpeg options parsed, several flags of one thing gathered).
  """

  model_dir: str = option(None, "A training run's directory (config.json, checkpoints/, "
                          "optionally threshold.json), or a serving SavedModel or LiteRT "
                          "export (or a directory of numbered versions of one).", required=True)
  input: Tuple[str, ...] = option(None, "A video file (.avi, .mp4, .mkv, ...), a folder of "
                                  "frames in natural order, a stream URL (rtsp://, http(s)://, "
                                  "udp://, tcp://, ...) or a V4L2 camera (/dev/video0); repeat "
                                  "it for several cameras, scored together by one model.",
                                  required=True, multi=True)
  output_dir: str = option(None, "Where scores.csv, events.jsonl, scores.png and the annotated "
                           "video go (created if needed); with several --input, in "
                           "<output_dir>/<camera>/.", required=True)
  threshold: Optional[float] = option(None, "Raw-score alarm threshold; default: "
                                      "<model_dir>/threshold.json (or the export's), else no "
                                      "alarms.")
  smoothing_window: int = option(1, "Causal moving average over this many raw scores before "
                                 "thresholding (1: none).")
  score: str = option("", "Frame score (default: the model's; a latent score of "
                      "daml_tf/models/scores.py).")
  smoothing: str = option("", "Causal smoothing before thresholding: ma:N or ema:A (overrides "
                          "--smoothing_window).")
  annotate: bool = option(False, "Also write the video with the latent error heatmap, the "
                          "anomaly box, the score and an ALARM banner drawn on each frame.")
  camera_name: str = option("", "Camera name in events.jsonl (default: the input's base name "
                            "without extension); one --input only.")
  camera_names: Tuple[str, ...] = option((), "The camera name of each --input, in order "
                                         "(events, output folders); default: each input's base "
                                         "name without extension.")
  max_frames: int = option(0, "Stop after this many frames (0: no limit); per camera.")
  duration_s: float = option(0.0, "Stop after this many seconds of stream time (0: no limit); "
                             "per camera.")
  plot_window: int = option(detection.DEFAULT_PLOT_WINDOW, "scores.png shows the last this "
                            "many frames (memory stays bounded on long inputs).")
  fps: float = option(video_io.DEFAULT_FPS, "Frame rate of a frames folder, and of a video or "
                      "stream that states none (most carry their own).")
  read_timeout_s: float = option(_LIVE.read_timeout_s, "Live input: an open, or a wait for the "
                                 "next packet, longer than this counts as a drop.")
  reconnect_initial_s: float = option(_LIVE.reconnect_initial_s, "Live input: wait before "
                                      "reopening a dropped stream, doubled after each failed "
                                      "attempt...")
  reconnect_max_s: float = option(_LIVE.reconnect_max_s, "...up to this.")
  max_reconnects: int = option(_LIVE.max_reconnects, "Live input: give up after this many "
                               "failed reopens in a row (0: never).")
  give_up_after_s: float = option(_LIVE.give_up_after_s, "Live input: give up after this many "
                                  "seconds without a frame (0: never).")
  rtsp_transport: str = option(_LIVE.rtsp_transport, "RTSP transport (tcp: no frame damaged "
                               "by lost datagrams).", choices=sources.RTSP_TRANSPORTS)
  input_options: Tuple[str, ...] = option((), "Live input: key=value options for FFmpeg's "
                                          "demuxer and protocol, e.g. video_size=640x480,"
                                          "framerate=15,input_format=mjpeg for a V4L2 camera.")
  log_every: int = option(100, "Frames (with several cameras: steps) between progress lines.")
  litert_precision: str = option("float32", "For a LiteRT export: which flatbuffers to run "
                                 "(float16: the float16-weight ones).",
                                 choices=backends.precisions())
  mqtt: str = option("", "Also publish each alarm event (the JSON of its events.jsonl line) to "
                     "this MQTT broker: host[:port]/topic, on topic <topic>/<camera>. "
                     f"Credentials, if the broker wants them, from ${mqtt_lib.USERNAME_ENV} and "
                     f"${mqtt_lib.PASSWORD_ENV}. A broker that is down never stops detection.")
  mqtt_qos: int = option(mqtt_lib.DEFAULT_QOS, "MQTT QoS of the events, 0, 1 or 2 (0: dropped "
                         "while disconnected; 1, 2: queued, see --mqtt_queue_size).",
                         lower_bound=0, upper_bound=2)
  mqtt_client_id: str = option("", "MQTT client id (default daml_tf-<host>-<pid>).")
  mqtt_queue_size: int = option(mqtt_lib.DEFAULT_QUEUE_SIZE, "Events kept in memory while the "
                                "broker is unreachable (QoS 1, 2); more are dropped with a "
                                "warning.")
  mqtt_flush_timeout_s: float = option(mqtt_lib.DEFAULT_FLUSH_TIMEOUT_S, "At exit, wait at most "
                                       "this long for queued events to reach the broker.")
  http: str = option("", "Serve the camera service's page and read-only API (live annotated "
                     "picture, score chart, events, /healthz, /metrics) on host:port while "
                     "detecting, e.g. 127.0.0.1:8080 (empty: off). Another address than "
                     f"loopback needs the token in ${detect_page.TOKEN_ENV}.")
  http_allow_unauthenticated: bool = option(False, "With --http on another address than "
                                            "loopback: serve it without a token (logged as a "
                                            "warning).")

  def to_config(self) -> detection.DetectConfig:
    """The frozen config run_detection takes (ConfigError names a bad flag)."""
    live = {field: getattr(self, field) for field in (
        "read_timeout_s", "reconnect_initial_s", "reconnect_max_s", "max_reconnects",
        "give_up_after_s", "rtsp_transport")}
    return detection.DetectConfig(
        model_dir=self.model_dir, inputs=tuple(self.input), output_dir=self.output_dir,
        threshold=self.threshold, smoothing_window=self.smoothing_window, score=self.score,
        smoothing=self.smoothing, annotate=self.annotate, fps=self.fps,
        log_every=self.log_every,
        runtime_options=backends.RuntimeOptions(precision=self.litert_precision),
        camera_name=self.camera_name, max_frames=self.max_frames, duration_s=self.duration_s,
        plot_window=self.plot_window, camera_names=tuple(self.camera_names),
        input_options=sources.parse_ffmpeg_options(list(self.input_options)),
        mqtt=mqtt_lib.config_from_spec(self.mqtt, qos=self.mqtt_qos,
                                   client_id=self.mqtt_client_id,
                                   queue_size=self.mqtt_queue_size,
                                   flush_timeout_s=self.mqtt_flush_timeout_s),
        **live)


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """detect's flags, one per DetectFlags field."""
  dataclass_flags.define_flags(DetectFlags, flag_values)


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> detection.DetectConfig:
  """The flags, once, as the frozen config run_detection takes."""
  return dataclass_flags.config_from_flags(DetectFlags, flag_values).to_config()


def run(flags_cfg: DetectFlags):
  """multicamera.run of the flags, with the page of --http around it."""
  cfg = flags_cfg.to_config()
  if not flags_cfg.http:
    return multicamera.run(cfg)
  page = detect_page.DetectPage(
      detect_page.parse_address(flags_cfg.http, flags_cfg.http_allow_unauthenticated),
      cfg.output_dir, cfg.cameras, cfg.read_timeout_s).start()
  try:
    return multicamera.run(cfg, page.observe)
  finally:
    page.stop()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  with cli.mirrored_flags(FLAGS, ("model_dir", "output_dir")):
    summaries = cli.exit_on_expected_errors(
        lambda: run(dataclass_flags.config_from_flags(DetectFlags, FLAGS)))
  # Giving up on a live input is a failure for a supervisor, though every file is complete.
  cli.finish(status=int(any(summary.stop_reason == detection.STOP_SOURCE_LOST
                            for summary in summaries.values())))


if __name__ == "__main__":
  define_flags()
  app.run(main)
