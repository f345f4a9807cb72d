"""Exports a trained model for deployment: a TF Serving SavedModel and LiteRT flatbuffers.

`python -m daml_tf.export --model_dir=runs/demo [--export_dir=runs/demo/export] [--version=1]
    [--tflite]`

writes `<export_dir>/<version>/`, the SavedModel TF Serving loads (signatures serving_default,
encode, predict_latent, score_latents over uint8 camera frames; see daml_tf.inference.serving),
and with --tflite `<export_dir>/litert/<version>/`, the encoder and motion model as LiteRT
flatbuffers in float32 and float16-weight variants (see daml_tf.inference.litert), converted in a
child process (daml_tf.inference.litert_convert). The newest checkpoint of the run is restored
into a float32 model, so a mixed-precision run exports float32 too; `<model_dir>/threshold.json`,
if present, is recorded in both exports. An existing version is never overwritten: the export
stops with exit status 1.

`python -m daml_tf.detect --model_dir=<export_dir>/<version>` (or the LiteRT directory) runs
the streaming detector on the export.
"""

from typing import Dict, Optional

from absl import app
from absl import flags
from absl import logging

from daml_tf import fileio
from daml_tf import cli
from daml_tf import errors
from daml_tf import run_dir
from daml_tf.inference import litert_convert
from daml_tf.inference import serving

FLAGS = flags.FLAGS

def export_model_dir(model_dir: str, export_dir: Optional[str] = None, version: int = 1,
                     tflite: bool = False) -> Dict[str, str]:
  """Exports the newest checkpoint of a training run.

  Args:
    model_dir: the run's directory (config.json, checkpoints/, optionally threshold.json).
    export_dir: the SavedModel base path; default `<model_dir>/export`.
    version: the version to write; it must not exist (nor, with tflite, its LiteRT directory).
    tflite: also convert to LiteRT (in a child process).

  Returns:
    {"saved_model": version directory, and with tflite "litert": LiteRT directory}.

  Raises:
    FileNotFoundError: no config.json or checkpoint in model_dir.
    errors.ExportError: the version exists, or the LiteRT conversion failed (the SavedModel is
      written by then and stays).
  """
  cfg = run_dir.load_config(model_dir)
  export_dir = export_dir or run_dir.export_dir(model_dir)
  # Both destinations are checked before anything is restored or written.
  serving.check_version_free(export_dir, version)
  litert_output = run_dir.litert_dir(export_dir, version)
  if tflite and fileio.exists(litert_output):
    raise errors.ExportError(f"{litert_output} already exists: refusing to overwrite the "
                              f"LiteRT export of version {version}; pass another --version.")
  model = run_dir.restore_model(cfg, model_dir)
  written = {"saved_model": serving.export_serving(
      model, export_dir, version, data_cfg=cfg.data,
      threshold=run_dir.load_threshold(model_dir), score=cfg.eval.score,
      motion_norm=run_dir.load_motion_norm(model_dir))}
  if tflite:
    try:
      written["litert"] = litert_convert.convert_in_subprocess(written["saved_model"],
                                                               litert_output)
    except errors.ExportError as error:
      raise errors.ExportError(f"{error} (The SavedModel {written['saved_model']} is written "
                                "and unaffected.)") from None
  return written


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  flags.DEFINE_string("model_dir", None, "A training run's directory (config.json, "
                      "checkpoints/, optionally threshold.json).", flag_values=flag_values)
  flags.DEFINE_string("export_dir", None, "The SavedModel base path TF Serving watches; "
                      "default <model_dir>/export.", flag_values=flag_values)
  flags.DEFINE_integer("version", 1, "Version number: the export goes to "
                       "<export_dir>/<version>/ and is never overwritten.",
                       flag_values=flag_values)
  flags.DEFINE_bool("tflite", False, "Also write LiteRT flatbuffers (encoder and motion model, "
                    "float32 and float16 weights) to <export_dir>/litert/<version>/.",
                    flag_values=flag_values)
  flags.mark_flags_as_required(["model_dir"], flag_values=flag_values)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  with cli.mirrored_flags(FLAGS, ("model_dir", "export_dir")):
    written = cli.exit_on_expected_errors(export_model_dir, FLAGS.model_dir, FLAGS.export_dir,
                                         FLAGS.version, FLAGS.tflite)
  for kind, path in written.items():
    logging.info("%s: %s", kind, path)
  cli.finish()


if __name__ == "__main__":
  define_flags()
  app.run(main)
