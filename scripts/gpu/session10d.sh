#!/usr/bin/env bash
# Session 10, call D (one H200): the channels-last GroupNorm in two launches (the partial sums'
# last block of each image takes its statistics and per-channel scale and shift; the apply is one
# fused multiply-add + SiLU per element), kernel by kernel beside the three-launch form
# (.gpu/gn_nhwc from scripts/gpu/gn-bench.sh), then against the binary before it
# (.gpu/shoal-onepass.gz: call C's, with the one-launch GroupNorm at 8²) alternated at batches 1
# and 8, the image of each (the same bits expected), and the GroupNorm rows of bench ops in f16
# and bf16 against PyTorch.
# (It ran with the loops of common.sh's `alternate` and `images` written inline: the same commands;
# its log labels the image comparisons by what they compare.)
#   bash scripts/gpu/session10d.sh
set -u
source scripts/gpu/common.sh
gunzip -c .gpu/shoal-onepass.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== GroupNorm (channels-last, f16) kernel by kernel"
.gpu/gn_nhwc 200
echo "== A/B: old = call C's binary, new = GroupNorm in two launches"
alternate /tmp/shoal-old
images /tmp/shoal-old img --steps 30 --dtype f16
images /tmp/shoal-old seq --steps 10 --dtype f16 --offload sequential
for d in f16 bf16; do
  echo "== bench ops group_norm $d"
  $S bench ops --dtype $d --batches 2,16 --iters 100 --only group_norm --peer torch 2>&1 \
    | grep -E "nhwc \||nhwc in place|FAIL|passed|failed|not bit-reproducible|geometric"
done
} 2>&1 | tee "$OUT/session10d.txt"
