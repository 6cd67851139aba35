#!/usr/bin/env bash
# Session 17, call A (one GPU): every plan cuDNN offers for each attention graph of bench ops, timed
# on the op's own buffers (SHOAL_CUDNN_PROBE=sdpa; the heuristic's choice marked), then the same for
# the batch-16 convolutions (=conv 16x, bounded), then where a batch of 8 goes (SHOAL_PROFILE=1).
#   bash scripts/gpu/session17a.sh
set -u
source scripts/gpu/common.sh
T0=$(date +%s.%N)
{
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv
echo "== [$(el $T0) s] cuDNN's SDPA plans, each timed (f16, batches 2 and 16)"
SHOAL_CUDNN_PROBE=sdpa $S bench ops --device cuda --dtype f16 --batches 2,16 --iters 20 > "$OUT/probe-sdpa-ops.md" 2> "$OUT/probe-sdpa.txt"
echo "rc $?"; grep -c shoal-cudnn-probe "$OUT/probe-sdpa.txt"
grep "shoal-cudnn-probe" "$OUT/probe-sdpa.txt" | head -150
echo "== [$(el $T0) s] where a batch goes (SHOAL_PROFILE=1, 10 steps, batches 8 and 1)"
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
SHOAL_PROFILE=1 $S bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 8,1 --reps 1 > "$OUT/profile.md" 2>&1
echo "rc $?"
echo "== [$(el $T0) s] cuDNN's convolution plans at batch 16, each timed (bounded to 150 s)"
SHOAL_CUDNN_PROBE="conv 16x" timeout 150 $S bench ops --device cuda --dtype f16 --batches 16 --iters 10 > "$OUT/probe-conv-ops.md" 2> "$OUT/probe-conv.txt"
echo "rc $?"; grep -c shoal-cudnn-probe "$OUT/probe-conv.txt"
echo "== [$(el $T0) s] done"
} 2>&1 | tee "$OUT/session17a.txt"
