#!/bin/bash
# Six Ped2 models for the motion-evidence study (issue 24): 3 seeds x {ped2_cpu.cfg, camera.cfg}.
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/motion_evidence}; DATA=${DATA:-$HOME/datasets}; mkdir -p $OUT
for seed in 0 1 2; do
  d=$OUT/ped2_cpu_s$seed
  [ -f $d/done ] || { .venv/bin/python -m daml_tf.train --flagfile=configs/ped2_cpu.cfg --data_dir=$DATA --model_dir=$d --seed=$seed > $d.log 2>&1 && touch $d/done; }
done
for seed in 0 1 2; do
  d=$OUT/camera_s$seed
  [ -f $d/done ] || { .venv/bin/python -m daml_tf.train --flagfile=configs/camera.cfg --dataset=ped2 --calibration_holdout=0 --data_dir=$DATA --model_dir=$d --seed=$seed > $d.log 2>&1 && touch $d/done; }
done
