#!/usr/bin/env bash
# Session 16, call B (one GPU): this session's binary (a) beside eager diffusers at batches 1, 4, 8 and 16
# (bench sd --peer diffusers, same files, same call), (b) the whole op table against PyTorch, call by call
# and as CUDA graph replays on both sides (--graphs), f16, batches 2 and 16.
#   bash scripts/gpu/session16b.sh
set -u
source scripts/gpu/common.sh
T0=$(date +%s.%N)
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
{
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
echo "== [$(el $T0) s] beside eager diffusers"
$S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,4,8,16 --reps 3 --peer diffusers 2>&1 \
  | grep -E "^\||peak|graph"
echo "== [$(el $T0) s] bench ops, every op, as CUDA graph replays (--graphs), beside PyTorch's"
$S bench ops --device cuda --dtype f16 --batches 2,16 --iters 50 --graphs --peer torch > "$OUT/ops-f16-graphs.md" 2>&1
echo "rc $?"; grep -E "geometric|under|apart|passed|failed" "$OUT/ops-f16-graphs.md"
echo "== [$(el $T0) s] bench ops, every op, call by call, beside PyTorch's"
$S bench ops --device cuda --dtype f16 --batches 2,16 --iters 50 --peer torch > "$OUT/ops-f16.md" 2>&1
echo "rc $?"; grep -E "geometric|under|apart|passed|failed" "$OUT/ops-f16.md"
echo "== [$(el $T0) s] done"
} 2>&1 | tee "$OUT/session16b.txt"
