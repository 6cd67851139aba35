#!/usr/bin/env bash
# Session 10, call E (one H200): the channels-last GroupNorm as three launches again, its finalize a
# warp per group that also forms each channel's scale and shift (call D's last-block finalize was
# serial: batch 1 0.206 -> 0.215 s), the apply one multiply-add + SiLU per element; kernel by kernel
# (.gpu/gn_nhwc from scripts/gpu/gn-bench.sh), then against call C's binary (.gpu/shoal-onepass.gz)
# alternated at batches 1 and 8, and the images of each (the same bits expected).
# (It ran with the loops of common.sh's `alternate` and `images` written inline: the same commands;
# its log labels the image comparisons by what they compare.)
#   bash scripts/gpu/session10e.sh
set -u
source scripts/gpu/common.sh
gunzip -c .gpu/shoal-onepass.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== GroupNorm (channels-last, f16) kernel by kernel"
.gpu/gn_nhwc 200
echo "== A/B: old = call C's binary, new = per-channel scale and shift"
alternate /tmp/shoal-old
images /tmp/shoal-old img --steps 30 --dtype f16
images /tmp/shoal-old bf --steps 30 --dtype bf16
echo "== bench ops group_norm f16 (checks)"
$S bench ops --dtype f16 --batches 2,16 --iters 20 --only group_norm 2>&1 | grep -E "FAIL|passed|failed|not bit-reproducible"
} 2>&1 | tee "$OUT/session10e.txt"
