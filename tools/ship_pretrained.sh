#!/usr/bin/env bash
# Turns a finished training run into the shipped weights: the model directory without TensorBoard
# logs or older checkpoints, its evaluation, and the raw scores of two test videos that
# tests/test_pretrained.py checks against.
#
#   tools/ship_pretrained.sh <model_dir> <flagfile> <data_dir> <dest>
#   tools/ship_pretrained.sh runs/ped2_cpu configs/ped2_cpu.cfg ~/datasets pretrained/ped2_cpu
set -euo pipefail
model_dir=$1 flagfile=$2 data_dir=$3 dest=$4
py=${PYTHON:-.venv/bin/python}

rm -rf "$dest"
mkdir -p "$dest/checkpoints"
cp "$model_dir/config.json" "$model_dir/background.npy" "$dest/"
latest=$("$py" -c "import sys, tensorflow as tf; print(tf.train.latest_checkpoint(sys.argv[1]))" \
  "$model_dir/checkpoints" 2>/dev/null)
cp "$latest".* "$dest/checkpoints/"
name=$(basename "$latest")
printf 'model_checkpoint_path: "%s"\nall_model_checkpoint_paths: "%s"\n' "$name" "$name" \
  > "$dest/checkpoints/checkpoint"

# The threshold first, so the exports carry it.
"$py" -m daml_tf.calibrate --model_dir="$dest" --data_dir="$data_dir"
# speedup_check.json: the label-free check the run would be ranked by.
"$py" -m daml_tf.rank_runs --model_dirs="$dest" --data_dir="$data_dir"
"$py" -m daml_tf.export --model_dir="$dest" --tflite
"$py" -m daml_tf.evaluate --flagfile="$flagfile" --data_dir="$data_dir" --model_dir="$dest" \
  --output_dir="$dest/eval"
"$py" -m daml_tf.evaluate --flagfile="$flagfile" --data_dir="$data_dir" --model_dir="$dest" \
  --output_dir="$dest/eval_online" --normalize=none --noplots

"$py" - "$dest" <<'PY'
import csv, json, sys
dest = sys.argv[1]
rows = list(csv.DictReader(open(f"{dest}/eval/scores.csv")))
raw = {v: [float(r["score"]) for r in rows if r["video"] == v] for v in ("01", "02")}
first = min(int(r["frame"]) for r in rows if r["video"] == "01")
json.dump({"raw_scores": raw, "first_scored_frame": first}, open(f"{dest}/reference_scores.json", "w"))
PY
du -sh "$dest"
