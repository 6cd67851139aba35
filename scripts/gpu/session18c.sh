#!/usr/bin/env bash
# Session 18, call C (one GPU; prepared, not run: the starts that found no
# machine): the few-keys attention kernel at head width 160 beside cuDNN's SDPA and PyTorch's best, and the
# sd15 image of seed 3 after against before. .gpu/shoal-s18a.gz is the binary before the change (main at
# f213ada), .gpu/shoal.gz the one after (the d160 kernel built and timed as "… few-keys" rows beside cuDNN's
# SDPA, not taken by the models: the image should not move).
#   bash scripts/gpu/session18c.sh
set -u
source scripts/gpu/common.sh
T0=$(date +%s.%N)
gunzip -c .gpu/shoal-s18a.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
{
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv
echo "== [$(el $T0) s] d160 rows, --graphs --reps 5"
$S bench ops --device cuda --dtype f16 --batches 2,16 --iters 50 --graphs --reps 5 --only d160 --peer torch \
  > "$OUT/ops-d160-graphs.md" 2>&1
echo "rc $?"; grep -E "^\| (sd|l|v)|geometric|under|passed|failed" "$OUT/ops-d160-graphs.md"
echo "== [$(el $T0) s] d160 rows, bf16"
$S bench ops --device cuda --dtype bf16 --batches 2,16 --iters 50 --only d160 > "$OUT/ops-d160-bf16.md" 2>&1
echo "rc $?"; grep -E "^\| (sd|l|v)|passed|failed" "$OUT/ops-d160-bf16.md"
echo "== [$(el $T0) s] images"
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
images /tmp/shoal-old f16 --steps 30 --dtype f16
$S generate "$P" --model /tmp/sd15 --seed 3 --device cuda --steps 30 --dtype f32 --out /tmp/f32-new --quiet > /dev/null 2>&1 || echo "f32: rc $?"
echo "f16 against f32, after: $($S image-diff /tmp/f32-new/*.png /tmp/f16-new/*.png 2>&1)"
echo "== [$(el $T0) s] cross rows, --graphs --reps 5"
$S bench ops --device cuda --dtype f16 --batches 2,16 --iters 50 --graphs --reps 5 --only cross --peer torch \
  > "$OUT/ops-cross-graphs.md" 2>&1
echo "rc $?"; grep -E "geometric|under|passed|failed" "$OUT/ops-cross-graphs.md"
echo "== [$(el $T0) s] done"
} 2>&1 | tee "$OUT/session18c.txt"
