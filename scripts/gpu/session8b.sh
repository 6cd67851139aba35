#!/usr/bin/env bash
# Session 8, call B (one H200): where a batch of 8 and of 1 goes now (SHOAL_PROFILE=1, events
# around each op, 10 steps), with the GPU's clocks before and after.
#   bash scripts/gpu/session8b.sh
set -u
source scripts/gpu/common.sh
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit --format=csv
SHOAL_PROFILE=1 $S bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 8,1 --reps 1 2>&1
echo "== unprofiled, same batches"
$S bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 8,1 --reps 3 2>&1 | grep -E "^\| [0-9]"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit --format=csv
} 2>&1 | tee "$OUT/session8b.txt"
