#!/usr/bin/env bash
# Session 14, call A (one H200): where the many-keys attention kernel's time goes, phase by phase
# (crates/shoal-kernels/bench/attn_flash.cu, built by scripts/gpu/flash-bench.sh into .gpu/attn_flash),
# and its candidates (128-key tiles, packed-half exponentials, half the exponentials by a
# polynomial); then bench ops' self-attention rows at batch 16 for cuDNN's time in the same call.
#   bash scripts/gpu/session14a.sh
set -u
source scripts/gpu/common.sh
{
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv
echo "== attn_flash bench"
.gpu/attn_flash 50
echo "== bench ops, self-attention rows (f16), batch 16"
$S bench ops --device cuda --dtype f16 --batches 16 --only self 2>&1 | grep -E "self|fell|^\| op"
} 2>&1 | tee "$OUT/session14a.txt"
