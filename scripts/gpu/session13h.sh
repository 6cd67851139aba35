#!/usr/bin/env bash
# Session 13, call H (one H200): the final binary (the flash kernel built and measured in bench ops,
# taken by no model path; csrc/fused.cu built for sm_90a) alternated against session 12's final binary
# at batches 1 and 8, and the image of each.
#   bash scripts/gpu/session13h.sh
set -u
source scripts/gpu/common.sh
gunzip -c .gpu/shoal-s12.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== A/B: old = session 12's final binary, new = session 13's final binary"
alternate /tmp/shoal-old
images /tmp/shoal-old img --steps 30 --dtype f16
} 2>&1 | tee "$OUT/session13h.txt"
