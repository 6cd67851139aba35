#!/usr/bin/env bash
# Session 15, call B (one H200): the binary taking the copy-engine attention kernel (attn_tma) for
# the self-attention at widths 40 and 64 (`nn::many_keys_kernel`). (1) bench ops' self-attention
# rows, f16 beside PyTorch (cuDNN's SDPA and the cp.async flash kernel beside each), bf16 checks at
# batch 16;
# (2) alternated bench sd at batches 1 and 8 against the binary without it (.gpu/shoal-old.gz),
# and the image of each; (3) bench sd beside eager diffusers at batches 1 and 8.
#   bash scripts/gpu/session15b.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
gunzip -c .gpu/shoal-old.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv
echo "== bench ops, self-attention rows (f16, beside PyTorch)"
$S bench ops --device cuda --dtype f16 --batches 2,16 --only self --peer torch 2>&1 | grep -E "self|fell|^\| op|rror"
echo "== bench ops, self-attention rows (bf16)"
$S bench ops --device cuda --dtype bf16 --batches 16 --only self --iters 10 2>&1 | grep -E "self|fell|^\| op|rror"
echo "== A/B: old = without attn_tma, new = this call's"
alternate /tmp/shoal-old
images /tmp/shoal-old img --steps 30 --dtype f16
echo "== beside eager diffusers"
$S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 2 --peer diffusers 2>&1 | grep -E "^\||peak|rror"
} 2>&1 | tee "$OUT/session15b.txt"
