#!/usr/bin/env bash
# Session 14, call D (one H200): the binary's flash kernel with two warpgroups a block
# (fused.cu FLASH_WG 2), its bench ops rows beside cuDNN's SDPA and PyTorch, f16, and its checks in bf16.
#   bash scripts/gpu/session14d.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
{
echo "== bench ops, self-attention rows (f16, beside PyTorch)"
$S bench ops --device cuda --dtype f16 --batches 2,16 --only self --peer torch 2>&1 | grep -E "self|fell|^\| op"
echo "== bench ops, self-attention rows (bf16)"
$S bench ops --device cuda --dtype bf16 --batches 2,16 --only self 2>&1 | grep -E "self|fell|^\| op"
} 2>&1 | tee "$OUT/session14d.txt"
