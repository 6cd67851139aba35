#!/usr/bin/env bash
# Session 18, call A (one GPU; session 17's call B, never run, with batches 4 and 16 added). The binary
# where 3×3 convolutions over 8 × 8 outputs add their residual after the kernel at every batch
# (nn::fuses_residual) and bench ops times each 3×3 residual both ways (the models' way, and "fused" /
# "added after" set apart: the rule's evidence on this GPU).
# (a) The whole op table as graph replays beside PyTorch, median of 3 timings on both sides: the summary
#     line counts the convolution and attention rows under 1× (issue 11's target: none among sd15's).
# (b) Beside eager diffusers at batches 1, 4, 8 and 16, same files, same call.
#   bash scripts/gpu/session18a.sh
set -u
source scripts/gpu/common.sh
T0=$(date +%s.%N)
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
{
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv
echo "== [$(el $T0) s] bench ops --graphs --reps 3 --peer torch, every op"
$S bench ops --device cuda --dtype f16 --batches 2,16 --iters 50 --graphs --reps 3 --peer torch \
  > "$OUT/ops-f16-graphs-reps3.md" 2>&1
echo "rc $?"; grep -E "l3/mid resnet nhwc\+res|geometric|under|passed|failed" "$OUT/ops-f16-graphs-reps3.md"
echo "== [$(el $T0) s] beside eager diffusers"
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
$S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,4,8,16 --reps 3 --peer diffusers 2>&1 \
  | grep -E "^\||peak|graph"
echo "== [$(el $T0) s] done"
} 2>&1 | tee "$OUT/session18a.txt"
