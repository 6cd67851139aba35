#!/usr/bin/env bash
# Session 10, call H (one H200): the session's final binary (the time embedding in conv1's bias, after
# call f) beside eager diffusers at batches 1 and 8.
#   bash scripts/gpu/session10h.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== the session's final binary beside eager diffusers"
$S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 3 --peer diffusers 2>&1 \
  | grep -E "^\||peak"
} 2>&1 | tee "$OUT/session10h.txt"
