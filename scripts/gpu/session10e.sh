#!/usr/bin/env bash
# Session 10, call E (one H200): the channels-last GroupNorm as three launches again, its finalize a
# warp per group that also forms each channel's scale and shift (call D's last-block finalize was
# serial: batch 1 0.206 -> 0.215 s), the apply one multiply-add + SiLU per element; kernel by kernel
# (.gpu/gn_nhwc from scripts/gpu/gn-bench.sh), then against call C's binary (.gpu/shoal-onepass.gz)
# alternated at batches 1 and 8, and the images of each (the same bits expected).
#   bash scripts/gpu/session10e.sh
set -u
source scripts/gpu/common.sh
gunzip -c .gpu/shoal-onepass.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== GroupNorm (channels-last, f16) kernel by kernel"
.gpu/gn_nhwc 200
echo "== A/B: old = call C's binary, new = per-channel scale and shift"
for r in 1 2; do
  for b in old new; do
    bin=$S; [ $b = old ] && bin=/tmp/shoal-old
    echo "-- $b, run $r"
    $bin bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 3 2>&1 | grep -E "^\| [0-9]"
  done
done
for b in old new; do
  bin=$S; [ $b = old ] && bin=/tmp/shoal-old
  $bin generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype f16 --out /tmp/img-$b --quiet > /dev/null 2>&1 || echo "$b: rc $?"
  $bin generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype bf16 --out /tmp/bf-$b --quiet > /dev/null 2>&1 || echo "$b bf16: rc $?"
done
echo "new vs old, sd15 30 steps f16: $($S image-diff /tmp/img-old/*.png /tmp/img-new/*.png 2>&1)"
echo "new vs old, sd15 30 steps bf16: $($S image-diff /tmp/bf-old/*.png /tmp/bf-new/*.png 2>&1)"
echo "== bench ops group_norm f16 (checks)"
$S bench ops --dtype f16 --batches 2,16 --iters 20 --only group_norm 2>&1 | grep -E "FAIL|passed|failed|not bit-reproducible"
} 2>&1 | tee "$OUT/session10e.txt"
