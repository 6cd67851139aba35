#!/usr/bin/env bash
# Session 7, call G (one H200): the session's final binary beside eager diffusers, one table
# (`bench sd --peer diffusers`, sd15 f16 512², 30 steps, batches 1, 4, 8, 16, defaults: CUDA graphs
# on, plans built ahead).
#   bash scripts/gpu/session7g.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
$S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,4,8,16 --reps 3 --peer diffusers 2>&1 \
  | grep -v "^Warning\|^{" | tee "$OUT/session7g.txt"
