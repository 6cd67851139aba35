#!/usr/bin/env bash
# Session 17, call A (one GPU): (a) every plan cuDNN offers for each attention graph of bench ops,
# timed on the op's own buffers (SHOAL_CUDNN_PROBE=sdpa; the heuristic's choice marked); (b) batches
# 1 and 8 with the heuristic's SDPA plans against the fastest of (a) in each process
# (SHOAL_CUDNN_FASTEST=sdpa), alternated; (c) the attention and ResNet-convolution rows as graph replays
# beside PyTorch, median of 5 timings on both sides (--reps 5).
#   bash scripts/gpu/session17a.sh
set -u
source scripts/gpu/common.sh
T0=$(date +%s.%N)
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
{
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
for only in self cross; do
  echo "== [$(el $T0) s] cuDNN's SDPA plans, each timed ($only rows, f16, batches 2 and 16)"
  SHOAL_CUDNN_PROBE=sdpa $S bench ops --device cuda --dtype f16 --batches 2,16 --iters 20 --only $only \
    > "$OUT/probe-$only-ops.md" 2> "$OUT/probe-$only.txt"
  echo "rc $?"; grep "shoal-cudnn-probe" "$OUT/probe-$only.txt"
done
echo "== [$(el $T0) s] A/B: heuristic's SDPA plans (A) against each process's fastest (B)"
for r in 1 2; do
  echo "-- A, run $r"
  $S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 3 2>&1 | grep -E "^\| [0-9]"
  echo "-- B, run $r"
  SHOAL_CUDNN_FASTEST=sdpa $S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 3 \
    2> "$OUT/fastest-$r.txt" | grep -E "^\| [0-9]"
  grep -c "| runs " "$OUT/fastest-$r.txt"; grep "| runs " "$OUT/fastest-$r.txt" | grep -vc "heuristic's choice"
done
for only in self cross resnet; do
  echo "== [$(el $T0) s] bench ops --graphs --reps 5 --peer torch, $only rows"
  $S bench ops --device cuda --dtype f16 --batches 2,16 --iters 50 --graphs --reps 5 --peer torch --only $only \
    > "$OUT/ops-$only-reps5.md" 2>&1
  echo "rc $?"; grep -E "geometric|under|passed|failed" "$OUT/ops-$only-reps5.md"
done
echo "== [$(el $T0) s] done"
} 2>&1 | tee "$OUT/session17a.txt"
