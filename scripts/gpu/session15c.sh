#!/usr/bin/env bash
# Session 15, the short form of calls A and B (one GPU, little device time left): the attn_tma bench,
# bench ops' self-attention rows (f16, cuDNN's SDPA and the cp.async flash kernel beside each, and
# PyTorch's), then the binary taking attn_tma alternated against the one without it (bench sd at
# batches 1 and 8) and the image of each.
#   bash scripts/gpu/session15c.sh
set -u
source scripts/gpu/common.sh
gunzip -c .gpu/shoal-old.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
{
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv
echo "== attn_tma bench"
.gpu/attn_tma 30
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
echo "== bench ops, self-attention rows (f16, beside PyTorch)"
$S bench ops --device cuda --dtype f16 --batches 2,16 --only self --peer torch 2>&1 | grep -E "self|fell|^\| op|rror"
echo "== A/B: old = without attn_tma, new = this call's"
alternate /tmp/shoal-old
images /tmp/shoal-old img --steps 30 --dtype f16
} 2>&1 | tee "$OUT/session15c.txt"
