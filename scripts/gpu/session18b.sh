#!/usr/bin/env bash
# Session 18, call B (one GPU): the few-keys attention kernel at head width 160 (sd15's level-2
# cross-attention over the 77 text tokens and its middle block's self-attention over 64 tokens),
# beside cuDNN's SDPA on the same inputs and PyTorch's best SDPA backend.
# .gpu/shoal-s18a.gz is the binary before the change (call A's, main at f213ada), .gpu/shoal.gz the one after
# (main: the d160 kernel built, timed by bench ops as "… few-keys" rows beside cuDNN's; not taken by the models).
# (a) The d160 rows, median of 5 timings, as graph replays; bf16 (its checks).
# (b) Every attention row (self, cross), median of 5 graph replays: the summary lines count the rows
#     under 1×.
# (c) The sd15 image of seed 3, f16: after against before, after against the f32 path; bf16 against f32.
# (d) Batches 1 and 8, before and after.
#   bash scripts/gpu/session18b.sh
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
for o in self cross; do
  echo "== [$(el $T0) s] $o rows, --graphs --reps 5"
  $S bench ops --device cuda --dtype f16 --batches 2,16 --iters 50 --graphs --reps 5 --only $o --peer torch \
    > "$OUT/ops-$o-graphs.md" 2>&1
  echo "rc $?"; grep -E "geometric|under|passed|failed" "$OUT/ops-$o-graphs.md"
done
echo "== [$(el $T0) s] images"
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
images /tmp/shoal-old f16 --steps 30 --dtype f16
$S generate "$P" --model /tmp/sd15 --seed 3 --device cuda --steps 30 --dtype f32 --out /tmp/f32-new --quiet > /dev/null 2>&1 || echo "f32: rc $?"
echo "f16 against f32, after: $($S image-diff /tmp/f32-new/*.png /tmp/f16-new/*.png 2>&1)"
$S generate "$P" --model /tmp/sd15 --seed 3 --device cuda --steps 30 --dtype bf16 --out /tmp/bf16-new --quiet > /dev/null 2>&1 || echo "bf16: rc $?"
echo "bf16 against f32, after: $($S image-diff /tmp/f32-new/*.png /tmp/bf16-new/*.png 2>&1)"
echo "== [$(el $T0) s] before and after"
for bin in /tmp/shoal-old $S; do
  echo "-- $bin"
  $bin bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 3 2>&1 | grep -E "^\| [0-9]"
done
echo "== [$(el $T0) s] done"
} 2>&1 | tee "$OUT/session18b.txt"
