#!/bin/bash
# Scores the six models of train_models.sh (RULE.md): AUCs of every variant (run.py), then the
# event-level table of latent_mean and the candidate through the service (experiments/event_level),
# each model with its own calibrated thresholds. Waits for each model's training to finish.
set -e
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/motion_evidence}; DATA=${DATA:-$HOME/datasets}
RESULTS=experiments/motion_evidence/results
MODELS="ped2_cpu_s0 ped2_cpu_s1 ped2_cpu_s2 camera_s0 camera_s1 camera_s2"
PY=.venv/bin/python
mkdir -p $RESULTS/events
for m in $MODELS; do
  while [ ! -f $OUT/$m/done ]; do sleep 30; done
  # latent_mean's threshold (training writes it; a run whose end-of-training step failed gets it here)
  [ -f $OUT/$m/threshold.json ] || $PY -m daml_tf.calibrate --model_dir=$OUT/$m
  # The candidate: a copy of the run calibrated for motion_weighted (threshold.json and motion_norm.json)
  if [ ! -f $OUT/${m}_mw/motion_norm.json ]; then
    rm -rf $OUT/${m}_mw && cp -r $OUT/$m $OUT/${m}_mw && rm -rf $OUT/${m}_mw/export
    $PY -m daml_tf.calibrate --model_dir=$OUT/${m}_mw --score=motion_weighted
  fi
  # The frame labels of the scored frames (the same clip geometry for all six models)
  [ -f $OUT/eval_online/scores.csv ] || $PY -m daml_tf.evaluate --flagfile=configs/ped2_cpu.cfg \
      --model_dir=$OUT/$m --data_dir=$DATA --output_dir=$OUT/eval_online --normalize=none --noplots
  [ -f $RESULTS/events/${m}_latent_mean.json ] || $PY -m experiments.event_level.run \
      --model_dir=$OUT/$m --labels_csv=$OUT/eval_online/scores.csv --data_dir=$DATA/ped2 \
      --output=$RESULTS/events/${m}_latent_mean.json > $OUT/events_${m}_lm.log 2>&1
  [ -f $RESULTS/events/${m}_motion_weighted.json ] || $PY -m experiments.event_level.run \
      --model_dir=$OUT/${m}_mw --score=motion_weighted --labels_csv=$OUT/eval_online/scores.csv \
      --data_dir=$DATA/ped2 --output=$RESULTS/events/${m}_motion_weighted.json > $OUT/events_${m}_mw.log 2>&1
done
# The candidate through the evaluate command itself, on one model: its AUCs must be run.py's.
$PY -m daml_tf.evaluate --flagfile=configs/ped2_cpu.cfg --model_dir=$OUT/ped2_cpu_s0_mw --data_dir=$DATA \
    --score=motion_weighted --output_dir=$OUT/eval_s0_mw --noplots
$PY -m daml_tf.evaluate --flagfile=configs/ped2_cpu.cfg --model_dir=$OUT/ped2_cpu_s0_mw --data_dir=$DATA \
    --score=motion_weighted --output_dir=$OUT/eval_s0_mw_online --normalize=none --noplots
$PY -m experiments.motion_evidence.run --model_dirs=$(for m in $MODELS; do printf "%s," $OUT/$m; done | sed 's/,$//') \
    --data_dir=$DATA --output=$RESULTS/auc.json
