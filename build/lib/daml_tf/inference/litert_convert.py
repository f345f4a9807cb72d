"""Converts a serving SavedModel's encoder and motion model to LiteRT flatbuffers.

`python -m daml_tf.inference.litert_convert --saved_model_dir=<export_dir>/<version>
    --output_dir=<export_dir>/litert/<version>`

writes encoder.tflite, motion.tflite, their float16-weight variants encoder_fp16.tflite and
motion_fp16.tflite, daml_litert.json and background.npy (see daml_tf.inference.litert for what
each holds and how the detector runs them). The encoder is converted from the export's
`encode_float` function (resize to the model size, background subtraction, encoder), the motion
model from its `predict_latent` signature.

`python -m daml_tf.export --tflite` runs this module in a child process
(`convert_in_subprocess`): on TensorFlow 2.16 with Keras 3 the converter's MLIR importer can
abort the whole process (`error: missing attribute 'value'` on a ReadVariableOp, then
`LLVM ERROR: Failed to infer result type(s).`, SIGABRT) instead of raising, and that must not
take the exporting process down. The functions here are frozen first (variables become
constants), which avoids that importer path altogether; the child process keeps any other crash
contained and reported in one message.
"""

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Dict, List

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf
# Freezing a TF2 function has no public API.
# pylint: disable=g-direct-tensorflow-import
from tensorflow.python.framework import convert_to_constants
# pylint: enable=g-direct-tensorflow-import

from daml_tf import cli
from daml_tf import errors
from daml_tf import fileio
from daml_tf.inference import litert
from daml_tf.inference import serving

FLAGS = flags.FLAGS
DEFAULT_TIMEOUT_S = 1800.0
# TensorFlow start-up chatter that says nothing about a failed conversion.
_NOISE = re.compile(r"Unable to register|cuda|TF-TRT|TensorRT|oneDNN|cpu_feature_guard|"
                    r"rebuild TensorFlow|AVX|absl::InitializeLog|^W0000|^I0000")
_ABSL_PREFIX = re.compile(r"^[EWIF]\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
_MAX_REASON_CHARS = 300


def _freeze(function, output_key: str):
  """A variable-free concrete function of a restored single-input function, outputs named.

  Freezing hands the converter constants only, so it never imports a ReadVariableOp (the op
  its TF 2.16 importer crashes on for Keras 3 graphs).
  """
  concrete = function.get_concrete_function()
  frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
  spec = tf.nest.flatten(concrete.structured_input_signature)[0]

  # The wrapper restores the input's name and a named output, which the flatbuffer's signature
  # then carries (freezing flattens both away).
  @tf.function(input_signature=[tf.TensorSpec(spec.shape, spec.dtype, name=spec.name)])
  def named(inputs):
    return {output_key: tf.nest.flatten(frozen(inputs))[0]}

  return named.get_concrete_function()


def _to_flatbuffer(function, float16_weights: bool) -> bytes:
  # An (empty) trackable object selects the converter's SavedModel path, which writes a
  # signature ("serving_default") into the flatbuffer; the function has no variables to track.
  converter = tf.lite.TFLiteConverter.from_concrete_functions([function], tf.Module())
  if float16_weights:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
  return converter.convert()


def _litert_metadata(export_metadata, saved_model_dir: str) -> Dict[str, object]:
  metadata = {key: value for key, value in export_metadata.items()
              if key not in ("signatures", "format")}
  metadata.update(
      source_saved_model=os.path.abspath(saved_model_dir),
      encoder_files=litert.ENCODER_FILES,
      motion_files=litert.MOTION_FILES,
      encoder_input="float32 [N, H0, W0, channels] in [0, 1], any H0 x W0 (resized inside)",
      motion_input="float32 [B, time_steps, *code_shape]",
      background_file=litert.BACKGROUND_FILE,
      background_in_encoder=True,
  )
  return metadata


def convert(saved_model_dir: str, output_dir: str) -> Dict[str, str]:
  """Converts the export in saved_model_dir and writes the LiteRT export to output_dir.

  Returns:
    {file name: path} of what was written.

  Raises:
    FileNotFoundError: saved_model_dir is not a DAML serving export.
    errors.ExportError: output_dir exists, or the converter failed (with its reason).
  """
  if not serving.is_saved_model_dir(saved_model_dir):
    raise FileNotFoundError(f"No SavedModel in {saved_model_dir!r} (no saved_model.pb).")
  export_metadata = serving.read_metadata(saved_model_dir)
  if fileio.exists(output_dir):
    raise errors.ExportError(f"{output_dir} already exists: refusing to overwrite it.")
  loaded = tf.saved_model.load(saved_model_dir)
  models = {"encoder": (loaded.encode_float, "latent", litert.ENCODER_FILES),
            "motion": (loaded.predict_latent, "predicted_latent", litert.MOTION_FILES)}
  written = {}

  def write(directory):
    fileio.makedirs(directory)
    for name, (function, output_key, files) in models.items():
      frozen = _freeze(function, output_key)
      for precision, file_name in files.items():
        start = time.perf_counter()
        try:
          flatbuffer = _to_flatbuffer(frozen, float16_weights=precision == "float16")
        except Exception as error:  # pylint: disable=broad-except
          # The converter raises several unrelated types; the message is what matters.
          raise errors.ExportError(f"Converting the {name} ({precision}) failed: "
                                    f"{_first_line(str(error))}") from error
        with fileio.GFile(os.path.join(directory, file_name), "wb") as f:
          f.write(flatbuffer)
        written[file_name] = os.path.join(output_dir, file_name)
        logging.info("%s: %.1f KB in %.1f s", file_name, len(flatbuffer) / 1024,
                     time.perf_counter() - start)
    buffer = io.BytesIO()
    np.save(buffer, loaded.background.numpy())
    with fileio.GFile(os.path.join(directory, litert.BACKGROUND_FILE), "wb") as f:
      f.write(buffer.getvalue())
    with fileio.GFile(os.path.join(directory, litert.METADATA_FILE), "w") as f:
      json.dump(_litert_metadata(export_metadata, saved_model_dir), f, indent=2, sort_keys=True)
    for file_name in (litert.BACKGROUND_FILE, litert.METADATA_FILE):
      written[file_name] = os.path.join(output_dir, file_name)

  fileio.write_atomically(output_dir, write, directory=True)
  logging.info("LiteRT export written to %s", output_dir)
  return written


# ------------------------------------------------------------------------------------------------
# Running the conversion in a child process.


def _first_line(text: str) -> str:
  lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
  return lines[0] if lines else "(no message)"


def _shorten(line: str) -> str:
  line = _ABSL_PREFIX.sub("", line)
  # MLIR prefixes its diagnostics with a source location that can run to kilobytes.
  if "error:" in line:
    line = line[line.index("error:"):]
  return line if len(line) <= _MAX_REASON_CHARS else line[:_MAX_REASON_CHARS] + " ..."


def failure_reason(stderr: str, max_lines: int = 3) -> str:
  """The lines of a failed conversion's stderr that say why, shortened, in order."""
  lines = [line.strip() for line in stderr.splitlines()
           if line.strip() and not _NOISE.search(line)]
  errors = [line for line in lines if re.search(r"error|exception|abort", line, re.I)]
  chosen = (errors or lines)[-max_lines:]
  return " | ".join(_shorten(line) for line in chosen) or "(no output)"


def converter_command(saved_model_dir: str, output_dir: str) -> List[str]:
  """The child process's command line (a module attribute so tests can replace it)."""
  return [sys.executable, "-m", "daml_tf.inference.litert_convert",
          f"--saved_model_dir={saved_model_dir}", f"--output_dir={output_dir}"]


def convert_in_subprocess(saved_model_dir: str, output_dir: str,
                          timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
  """Runs `convert` in a child process so a converter crash cannot end this one.

  Returns:
    output_dir.

  Raises:
    errors.ExportError: the child failed, crashed or timed out; the message holds the reason
      (the last error lines of its output) and the command to rerun it with full output.
  """
  command = converter_command(saved_model_dir, output_dir)
  env = dict(os.environ)
  # This file is <root>/daml_tf/inference/litert_convert.py.
  package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  rerun = (f"python -m daml_tf.inference.litert_convert --saved_model_dir={saved_model_dir} "
           f"--output_dir={output_dir}")
  start = time.perf_counter()
  logging.info("Converting %s to LiteRT in a child process", saved_model_dir)
  try:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env,
                            check=False)
  except subprocess.TimeoutExpired:
    raise errors.ExportError(f"LiteRT conversion did not finish within {timeout_s:.0f} s; "
                              f"rerun it with: {rerun}") from None
  if result.returncode:
    if result.returncode < 0:
      how = f"crashed ({signal.Signals(-result.returncode).name})"
    else:
      how = f"failed (exit status {result.returncode})"
    raise errors.ExportError(f"LiteRT conversion of {saved_model_dir} {how}: "
                              f"{failure_reason(result.stderr).rstrip('.')}. For its full "
                              f"output run: {rerun}")
  logging.info("LiteRT export written to %s in %.1f s", output_dir, time.perf_counter() - start)
  return output_dir


# ------------------------------------------------------------------------------------------------
# Entry point.


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  flags.DEFINE_string("saved_model_dir", None, "A serving export's version directory "
                      "(<export_dir>/<version>).", flag_values=flag_values)
  flags.DEFINE_string("output_dir", None, "Where the LiteRT export goes (must not exist).",
                      flag_values=flag_values)
  flags.mark_flags_as_required(["saved_model_dir", "output_dir"], flag_values=flag_values)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  cli.exit_on_expected_errors(convert, FLAGS.saved_model_dir, FLAGS.output_dir)


if __name__ == "__main__":
  define_flags()
  app.run(main)
