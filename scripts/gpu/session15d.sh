#!/usr/bin/env bash
# Session 15, call D (one GPU): the binary with attn_tma in the configuration call C measured fastest
# (4 warpgroups a block, the intra-warpgroup overlap), taken at width 40 only (`nn::many_keys_kernel`).
# (1) bench ops' self-attention rows, f16 beside PyTorch (cuDNN's SDPA beside each row it takes), bf16
# at batch 16 (last); (2) the image of each binary; (3) alternated bench sd at batches 1 and 8 against
# the binary without it (.gpu/shoal-old.gz: `scripts/gpu/build.sh` at commit aea78e9, where the kernel
# is built and no model path takes it). Not yet run (session 15 had no device time left).
#   bash scripts/gpu/session15d.sh
set -u
source scripts/gpu/common.sh
gunzip -c .gpu/shoal-old.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
{
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
echo "== bench ops, self-attention rows (f16, beside PyTorch)"
$S bench ops --device cuda --dtype f16 --batches 2,16 --only self --peer torch 2>&1 | grep -E "self|fell|^\| op|rror"
images /tmp/shoal-old img --steps 30 --dtype f16
echo "== A/B: old = without attn_tma, new = this call's"
alternate /tmp/shoal-old
echo "== bench ops, self-attention rows (bf16), batch 16"
$S bench ops --device cuda --dtype bf16 --batches 16 --only "l0 self" --iters 10 2>&1 | grep -E "self|fell|^\| op|rror"
} 2>&1 | tee "$OUT/session15d.txt"
