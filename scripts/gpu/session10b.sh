#!/usr/bin/env bash
# Session 10, call B (one H200), written in session 9: the channels-last GroupNorm in one launch
# (gn_one_pass_nhwc, compiled and linted in session 9, not yet run) against the three-launch kernel
# and PyTorch on every GroupNorm shape, f16 and bf16 (checks, bits between two calls, times).
# If it is faster at the small shapes, the next step is a size rule in nn/norm.rs and an A/B at
# batches 1 and 8.
#   bash scripts/gpu/session10b.sh
set -u
source scripts/gpu/common.sh
{
for d in f16 bf16; do
  echo "== group_norm $d"
  $S bench ops --dtype $d --batches 2,16 --iters 100 --only group_norm --peer torch 2>&1 \
    | grep -E "nhwc|FAIL|passed|failed|not bit-reproducible|geometric"
done
} 2>&1 | tee "$OUT/session10b.txt"
