#!/usr/bin/env bash
# Session 10, call D (one H200): the channels-last GroupNorm in two launches (the partial sums'
# last block of each image takes its statistics and per-channel scale and shift; the apply is one
# fused multiply-add + SiLU per element), kernel by kernel beside the three-launch form
# (.gpu/gn_nhwc from scripts/gpu/gn-bench.sh), then against the binary before it
# (.gpu/shoal-onepass.gz: call C's, with the one-launch GroupNorm at 8²) alternated at batches 1
# and 8, the image of each (the same bits expected), and the GroupNorm rows of bench ops in f16
# and bf16 against PyTorch.
#   bash scripts/gpu/session10d.sh
set -u
source scripts/gpu/common.sh
gunzip -c .gpu/shoal-onepass.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== GroupNorm (channels-last, f16) kernel by kernel"
.gpu/gn_nhwc 200
echo "== A/B: old = call C's binary, new = GroupNorm in two launches"
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
  $bin generate "$P" --model /tmp/sd15 --steps 10 --seed 3 --device cuda --dtype f16 --offload sequential --out /tmp/seq-$b --quiet > /dev/null 2>&1 || echo "$b seq: rc $?"
done
echo "new vs old, sd15 30 steps: $($S image-diff /tmp/img-old/*.png /tmp/img-new/*.png 2>&1)"
echo "new vs old, sequential offload (VAE GroupNorm in place): $($S image-diff /tmp/seq-old/*.png /tmp/seq-new/*.png 2>&1)"
for d in f16 bf16; do
  echo "== bench ops group_norm $d"
  $S bench ops --dtype $d --batches 2,16 --iters 100 --only group_norm --peer torch 2>&1 \
    | grep -E "nhwc \||nhwc in place|FAIL|passed|failed|not bit-reproducible|geometric"
done
} 2>&1 | tee "$OUT/session10d.txt"
