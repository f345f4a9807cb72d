"""Scores a video, a frames folder or a live stream frame by frame, as a camera delivers them.

`python -m daml_tf.detect --model_dir=runs/demo --input=video.avi --output_dir=out [--annotate]`
`python -m daml_tf.detect --model_dir=runs/demo --input=rtsp://camera/stream --output_dir=out`
`python -m daml_tf.detect --model_dir=runs/demo --input=a.avi --input=b.avi --output_dir=out`
(several cameras; names: [--camera_names=gate,hall])

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
"""

from absl import app
from absl import flags

from daml_tf import cli
from daml_tf.data import video_io
from daml_tf.inference import detection
from daml_tf.inference import litert
from daml_tf.inference import mqtt
from daml_tf.inference import multicamera
from daml_tf.inference import sources

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  flags.DEFINE_string("model_dir", None, "A training run's directory (config.json, "
                      "checkpoints/, optionally threshold.json), or a serving SavedModel or "
                      "LiteRT export (or a directory of numbered versions of one).",
                      flag_values=flag_values)
  flags.DEFINE_multi_string("input", None, "A video file (.avi, .mp4, .mkv, ...), a folder "
                            "of frames in natural order, a stream URL (rtsp://, http(s)://, "
                            "udp://, tcp://, ...) or a V4L2 camera (/dev/video0); "
                            "repeat it for several cameras, scored together by one model.",
                            flag_values=flag_values)
  flags.DEFINE_string("output_dir", None, "Where scores.csv, events.jsonl, scores.png and the "
                      "annotated video go (created if needed); with several --input, in "
                      "<output_dir>/<camera>/.", flag_values=flag_values)
  flags.DEFINE_float("threshold", None, "Raw-score alarm threshold; default: "
                     "<model_dir>/threshold.json (or the export's), else no alarms.",
                     flag_values=flag_values)
  flags.DEFINE_integer("smoothing_window", 1, "Causal moving average over this many raw scores "
                       "before thresholding (1: none).", flag_values=flag_values)
  flags.DEFINE_string("score", "", "Frame score (default: the model's; a latent score of "
                      "daml_tf/models/scores.py).", flag_values=flag_values)
  flags.DEFINE_string("smoothing", "", "Causal smoothing before thresholding: ma:N or ema:A "
                      "(overrides --smoothing_window).", flag_values=flag_values)
  flags.DEFINE_bool("annotate", False, "Also write the video with the latent error heatmap, "
                    "the anomaly box, the score and an ALARM banner drawn on each frame.",
                    flag_values=flag_values)
  flags.DEFINE_string("camera_name", "", "Camera name in events.jsonl (default: the input's "
                      "base name without extension); one --input only.", flag_values=flag_values)
  flags.DEFINE_list("camera_names", [], "The camera name of each --input, in order (events, "
                    "output folders); default: each input's base name without extension.",
                    flag_values=flag_values)
  flags.DEFINE_integer("max_frames", 0, "Stop after this many frames (0: no limit); per "
                       "camera.", flag_values=flag_values)
  flags.DEFINE_float("duration_s", 0.0, "Stop after this many seconds of stream time (0: no "
                     "limit); per camera.", flag_values=flag_values)
  flags.DEFINE_integer("plot_window", detection.DEFAULT_PLOT_WINDOW, "scores.png shows the "
                       "last this many frames (memory stays bounded on long inputs).",
                       flag_values=flag_values)
  flags.DEFINE_float("fps", video_io.DEFAULT_FPS, "Frame rate of a frames folder, and of a "
                     "video or stream that states none (most carry their own).",
                     flag_values=flag_values)
  _define_live_flags(flag_values)
  flags.DEFINE_integer("log_every", 100, "Frames (with several cameras: steps) between "
                       "progress lines.",
                       flag_values=flag_values)
  flags.DEFINE_enum("litert_precision", "float32", list(litert.PRECISIONS), "For a LiteRT "
                    "export: which flatbuffers to run (float16: the float16-weight ones).",
                    flag_values=flag_values)
  flags.DEFINE_string("mqtt", "", "Also publish each alarm event (the JSON of its events.jsonl "
                      "line) to this MQTT broker: host[:port]/topic, on topic <topic>/<camera>. "
                      f"Credentials, if the broker wants them, from ${mqtt.USERNAME_ENV} and "
                      f"${mqtt.PASSWORD_ENV}. A broker that is down never stops detection.",
                      flag_values=flag_values)
  flags.DEFINE_integer("mqtt_qos", mqtt.DEFAULT_QOS, "MQTT QoS of the events, 0, 1 or 2 (0: "
                       "dropped while disconnected; 1, 2: queued, see --mqtt_queue_size).",
                       lower_bound=0, upper_bound=2, flag_values=flag_values)
  flags.DEFINE_string("mqtt_client_id", "", "MQTT client id (default daml_tf-<host>-<pid>).",
                      flag_values=flag_values)
  flags.DEFINE_integer("mqtt_queue_size", mqtt.DEFAULT_QUEUE_SIZE, "Events kept in memory "
                       "while the broker is unreachable (QoS 1, 2); more are dropped with a "
                       "warning.", flag_values=flag_values)
  flags.DEFINE_float("mqtt_flush_timeout_s", mqtt.DEFAULT_FLUSH_TIMEOUT_S, "At exit, wait at "
                     "most this long for queued events to reach the broker.",
                     flag_values=flag_values)
  flags.mark_flags_as_required(["model_dir", "input", "output_dir"], flag_values=flag_values)


# (define, name, help) of the live-input flags whose defaults are sources.SourceOptions'.
_LIVE_FLAGS = (
    (flags.DEFINE_float, "read_timeout_s", "Live input: an open, or a wait for the next "
     "packet, longer than this counts as a drop."),
    (flags.DEFINE_float, "reconnect_initial_s", "Live input: wait before reopening a dropped "
     "stream, doubled after each failed attempt..."),
    (flags.DEFINE_float, "reconnect_max_s", "...up to this."),
    (flags.DEFINE_integer, "max_reconnects", "Live input: give up after this many failed "
     "reopens in a row (0: never)."),
    (flags.DEFINE_float, "give_up_after_s", "Live input: give up after this many seconds "
     "without a frame (0: never)."),
)


def _define_live_flags(flag_values: flags.FlagValues) -> None:
  defaults = sources.SourceOptions()
  for define, name, help_text in _LIVE_FLAGS:
    define(name, getattr(defaults, name), help_text, flag_values=flag_values)
  flags.DEFINE_enum("rtsp_transport", defaults.rtsp_transport, list(sources.RTSP_TRANSPORTS),
                    "RTSP transport (tcp: no frame damaged by lost datagrams).",
                    flag_values=flag_values)
  flags.DEFINE_list("input_options", [], "Live input: key=value options for FFmpeg's demuxer "
                    "and protocol, e.g. video_size=640x480,framerate=15,input_format=mjpeg for "
                    "a V4L2 camera.", flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> detection.DetectConfig:
  """The flags, once, as the frozen config run_detection takes."""
  return detection.DetectConfig(
      model_dir=flag_values.model_dir, inputs=tuple(flag_values.input),
      output_dir=flag_values.output_dir, threshold=flag_values.threshold,
      smoothing_window=flag_values.smoothing_window, score=flag_values.score,
      smoothing=flag_values.smoothing, annotate=flag_values.annotate, fps=flag_values.fps,
      log_every=flag_values.log_every, litert_precision=flag_values.litert_precision,
      camera_name=flag_values.camera_name, max_frames=flag_values.max_frames,
      duration_s=flag_values.duration_s, plot_window=flag_values.plot_window,
      camera_names=tuple(flag_values.camera_names),
      read_timeout_s=flag_values.read_timeout_s,
      reconnect_initial_s=flag_values.reconnect_initial_s,
      reconnect_max_s=flag_values.reconnect_max_s, max_reconnects=flag_values.max_reconnects,
      give_up_after_s=flag_values.give_up_after_s, rtsp_transport=flag_values.rtsp_transport,
      input_options=sources.parse_ffmpeg_options(flag_values.input_options),
      mqtt=mqtt.config_from_spec(flag_values.mqtt, qos=flag_values.mqtt_qos,
                                 client_id=flag_values.mqtt_client_id,
                                 queue_size=flag_values.mqtt_queue_size,
                                 flush_timeout_s=flag_values.mqtt_flush_timeout_s))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  with cli.mirrored_flags(FLAGS, ("model_dir", "output_dir")):
    summaries = cli.exit_on_expected_errors(lambda: multicamera.run(config_from_flags()))
  # Giving up on a live input is a failure for a supervisor, though every file is complete.
  cli.finish(status=int(any(summary.stop_reason == detection.STOP_SOURCE_LOST
                            for summary in summaries.values())))


if __name__ == "__main__":
  define_flags()
  app.run(main)
