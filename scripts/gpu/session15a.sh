#!/usr/bin/env bash
# Session 15, call A (one H200): the many-keys attention kernel on the copy engine (attn_tma, its
# variants) beside the binary's attn_flash (crates/shoal-kernels/bench/attn_tma.cu, built by
# scripts/gpu/tma-bench.sh into .gpu/attn_tma); with .gpu/shoal.gz present, bench ops' self-attention
# rows at batch 16 for cuDNN's time in the same call.
#   bash scripts/gpu/session15a.sh
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
{
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv
echo "== attn_tma bench"
.gpu/attn_tma 50
if [ -f .gpu/shoal.gz ]; then
  source scripts/gpu/common.sh
  echo "== bench ops, self-attention rows (f16), batches 2 and 16"
  $S bench ops --device cuda --dtype f16 --batches 2,16 --only self 2>&1 | grep -E "self|fell|^\| op"
fi
} 2>&1 | tee "$OUT/session15a.txt"
