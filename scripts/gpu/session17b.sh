#!/usr/bin/env bash
# Session 17, call B (one GPU; prepared, not run in session 17: the device time was spent): the 3×3
# convolutions over 8 × 8 outputs add their residual after the kernel at every batch (nn::fuses_residual).
# (a) The ResNet rows as graph replays beside PyTorch, median of 5 timings on both sides; each 3×3
# residual row is timed both ways (the models' way, and "fused" / "added after" set apart), which is the
# rule's evidence on this GPU. (b) A batch of 8 through the model (its UNet call at batch 16 runs those layers).
#   bash scripts/gpu/session17b.sh
set -u
source scripts/gpu/common.sh
T0=$(date +%s.%N)
{
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv
echo "== [$(el $T0) s] bench ops --graphs --reps 5 --peer torch, the ResNet rows"
$S bench ops --device cuda --dtype f16 --batches 2,16 --iters 50 --graphs --reps 5 --peer torch --only resnet \
  > "$OUT/ops-resnet-reps5.md" 2>&1
echo "rc $?"; grep -E "nhwc\+res|geometric|under|passed|failed" "$OUT/ops-resnet-reps5.md"
echo "== [$(el $T0) s] a batch of 8"
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
$S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 3 2>&1 | grep -E "^\||graph"
echo "== [$(el $T0) s] done"
} 2>&1 | tee "$OUT/session17b.txt"
