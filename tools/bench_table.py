"""Markdown tables for the README from `python -m daml_tf.benchmark --output=...` JSON files.

    .venv/bin/python tools/bench_table.py docs/bench/ped2_cpu.json docs/bench/ped2_paper.json ...

Prints one table of batch-1/batch-8 Keras graph timings, one of the per-runtime batch-1 timings
and one of the end-to-end frames/s on the video, one row per file, and, for files made with
--streams, one of the multi-stream timings, so the README quotes the files rather than retyped
numbers.
"""

import json
import os
import sys


def _name(path, result):
  model = result["model"]
  bottleneck = model.get("motion_bottleneck", 0)
  return (f"`{os.path.basename(path)}`: {model['image_size'][0]}x{model['image_size'][1]}, "
          f"k={model['time_steps']}, root {model['feature_root']}"
          + (f", bottleneck {bottleneck}" if bottleneck else ""))


def main(paths):
  results = [(path, json.load(open(path))) for path in paths]
  print("| model | batch | GMAC/frame dec. / coup. | decoupled frames/s (ms) | "
        "coupled frames/s (ms) | dec/coup |")
  print("|---|---|---|---|---|---|")
  for path, result in results:
    gmac = result["gmac_per_frame"]
    for entry in result["results"]:
      dec, coup = entry["decoupled"], entry["coupled"]
      print(f"| {_name(path, result)} | {entry['batch_size']} | "
            f"{gmac['decoupled']:.3g} / {gmac['coupled']:.3g} | "
            f"{dec['frames_per_second']:.3g} ({dec['ms_per_frame']:.3g}) | "
            f"{coup['frames_per_second']:.3g} ({coup['ms_per_frame']:.3g}) | "
            f"{entry['speedup']:.2f}x |")
  runtimes = [name for _, result in results for name in result.get("runtimes", {})]
  runtimes = list(dict.fromkeys(runtimes))
  print()
  print("| model | " + " | ".join(f"{name} dec. / coup. frames/s" for name in runtimes) + " |")
  print("|---" * (len(runtimes) + 1) + "|")
  for path, result in results:
    cells = []
    for name in runtimes:
      entry = result.get("runtimes", {}).get(name)
      cells.append("" if entry is None else
                   f"{entry['decoupled']['frames_per_second']:.3g} / "
                   f"{entry['coupled']['frames_per_second']:.3g}")
    print(f"| {_name(path, result)} | " + " | ".join(cells) + " |")
  print()
  print("| model | video | decoding alone | " + " | ".join(runtimes) + " |")
  print("|---|---|---" + "|---" * len(runtimes) + "|")
  for path, result in results:
    video = result.get("end_to_end")
    if not video:
      continue
    cells = [f"{video['runtimes'][name]['frames_per_second']:.3g}"
             if name in video["runtimes"] else "" for name in runtimes]
    print(f"| {_name(path, result)} | {os.path.basename(video['video'])}, "
          f"{video['timed_frames']} scored frames of "
          f"{'x'.join(map(str, video['frame_shape']))} | "
          f"{video['decode_only_frames_per_second']:.0f} | " + " | ".join(cells) + " |")
  if any(result.get("streams") for _, result in results):
    print()
    _streams_table(results)


def _streams_table(results):
  """Several streams per runtime (--streams): total and per-stream frames/s, batched vs
  separate detectors."""
  print("| file (threads) | runtime | streams | batched: total frames/s (per stream) | "
        "separate: total frames/s (per stream) | batched / separate |")
  print("|---|---|---|---|---|---|")
  for path, result in results:
    threads = result["machine"]["intra_op_threads"]
    for name, entries in result.get("streams", {}).items():
      for entry in entries:
        batched, separate = entry["batched"], entry["separate"]
        print(f"| `{os.path.basename(path)}` ({threads}) | {name} | {entry['streams']} | "
              f"{batched['total_frames_per_second']:.0f} "
              f"({batched['per_stream_frames_per_second']:.0f}) | "
              f"{separate['total_frames_per_second']:.0f} "
              f"({separate['per_stream_frames_per_second']:.0f}) | {entry['speedup']:.2f}x |")


if __name__ == "__main__":
  main(sys.argv[1:])
