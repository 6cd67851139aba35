#!/usr/bin/env bash
# Session 13, call A (one H200): the flash kernel (attention over many keys at the head's own width,
# `attn_flash` in csrc/fused.cu), taken for width 40 with two tiles of 16 rows per warp.
# (1) bench ops' self-attention rows, f16 beside PyTorch, with cuDNN's SDPA and every tiling of the
# flash kernel beside each; bf16 with its checks; (2) alternated bench sd at batches 1 and 8 against
# session 12's final binary, and the image of each.
#   bash scripts/gpu/session13a.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
gunzip -c .gpu/shoal-s12.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== bench ops, self-attention rows (f16, beside PyTorch)"
$S bench ops --device cuda --dtype f16 --batches 2,16 --only self --peer torch 2>&1 | grep -E "self|fell|^\| op"
echo "== bench ops, self-attention rows (bf16)"
$S bench ops --device cuda --dtype bf16 --batches 2,16 --only self 2>&1 | grep -E "self|fell|^\| op"
echo "== A/B: old = session 12's final binary, new = flash attention at width 40"
alternate /tmp/shoal-old
images /tmp/shoal-old img --steps 30 --dtype f16
} 2>&1 | tee "$OUT/session13a.txt"
