#!/usr/bin/env bash
# Session 11, call B (one H200): the GEGLU projection, the binary's two kernels against
# csrc/geglu_gemm.cu's one GEMM (its epilogue now transposes each quad's words for 16-byte stores)
# in four configurations (.gpu/geglu_gemm from scripts/gpu/geglu-bench.sh).
#   bash scripts/gpu/session11b.sh
set -u
source scripts/gpu/common.sh
{
echo "== GEGLU projection (f16): two kernels against one"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
.gpu/geglu_gemm 100
} 2>&1 | tee "$OUT/session11b.txt"
