#!/usr/bin/env bash
# Session 12, call B (one H200): the few-keys attention with a block's rows chosen by the grid (1–8
# tiles of 16 rows per warp, at least 1024 blocks) and the next tile's q loaded during this one's
# softmax. (1) bench ops' cross-attention rows: f16 beside PyTorch (call A has them for two tiles per
# warp without the prefetch), bf16 with its checks; (2) alternated bench sd
# at batches 1 and 8 against session 11's final binary and the image of each; (3) the new binary
# beside eager diffusers at batches 1, 4, 8 and 16.
#   bash scripts/gpu/session12b.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
gunzip -c .gpu/shoal-s11.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== bench ops, cross-attention rows (f16, beside PyTorch)"
$S bench ops --device cuda --dtype f16 --batches 2,16 --only cross --peer torch 2>&1 | grep -E "cross|fell|^\| op"
echo "== bench ops, cross-attention rows (bf16)"
$S bench ops --device cuda --dtype bf16 --batches 2,16 --only cross 2>&1 | grep -E "cross|fell|^\| op"
echo "== A/B: old = session 11's final binary, new = few-keys attention"
alternate /tmp/shoal-old
images /tmp/shoal-old img --steps 30 --dtype f16
echo "== the new binary beside eager diffusers"
$S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,4,8,16 --reps 3 --peer diffusers 2>&1 \
  | grep -E "^\||peak"
} 2>&1 | tee "$OUT/session12b.txt"
