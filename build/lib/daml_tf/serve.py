"""Runs daml_tf as a camera service: `python -m daml_tf.serve --config=cameras.yaml`.

One YAML file describes every camera (its input, model, threshold, masks and false-alarm
controls), what is recorded of each alarm, and the MQTT broker (Home Assistant discovery). See
docs/guide/service.md for the file, a systemd unit and Home Assistant in three steps.

`${VAR}` in the file is replaced from the environment, so an RTSP password never sits in argv;
it is redacted from every log line. SIGINT or SIGTERM stops the service with every file complete
and `stopped` on MQTT (exit 0); a bad file or a model that cannot be opened stops it at the start
with one line naming the key (exit 1).
"""

import dataclasses

from absl import app
from absl import flags
from absl import logging

from daml_tf import cli
from daml_tf import dataclass_flags
from daml_tf.service import config as service_config
from daml_tf.service import runner

option = dataclass_flags.option


@dataclasses.dataclass(frozen=True)
class ServeConfig:
  """The command line of the service (everything else is in the YAML file)."""

  config: str = option(None, "The service's YAML file (cameras, record, mqtt, alarm).",
                       required=True)
  duration_s: float = option(0.0, "Stop every camera after this many seconds of its own stream "
                             "(0: run until stopped); for tests and trials.")
  max_frames: int = option(0, "Stop every camera after this many of its frames (0: no limit); "
                           "for tests and trials.")
  log_every: int = option(500, "Steps between progress lines (0: none).")


def serve(cfg: ServeConfig) -> dict:
  """Loads the YAML file, hides its secrets from the logs, runs the service."""
  service_cfg = service_config.load(cfg.config)
  service_config.install_redaction(service_config.secret_values(service_cfg))
  logging.info("Service of %d camera(s): %s; output in %s", len(service_cfg.cameras),
               ", ".join(f"{c.name} ({c.display_input})" for c in service_cfg.cameras),
               service_cfg.record.output_dir)
  return runner.run(service_cfg, runner.RunOptions(cfg.duration_s, cfg.max_frames,
                                                   cfg.log_every))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  cfg = dataclass_flags.config_from_flags(ServeConfig, flags.FLAGS)
  stopped = cli.exit_on_expected_errors(serve, cfg)
  logging.info("Service stopped: %s", stopped)
  cli.finish()


if __name__ == "__main__":
  dataclass_flags.define_flags(ServeConfig)
  app.run(main)
