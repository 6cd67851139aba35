#!/usr/bin/env bash
# Session 11, call A (one H200): (1) the channels-last GroupNorm's kernels one by one with two
# candidates for the partial sums (a warp per group reducing the block's slots; chunks of 8K
# elements, twice the blocks) as CUDA graphs, and their largest difference from the binary's output
# (.gpu/gn_nhwc from scripts/gpu/gn-bench.sh); (2) the GEGLU projection: the binary's cuBLASLt GEMM +
# bias_geglu against csrc/geglu_gemm.cu's one CUTLASS GEMM in four configurations, with errors
# against an f32 reference (.gpu/geglu_gemm from scripts/gpu/geglu-bench.sh).
#   bash scripts/gpu/session11a.sh
set -u
source scripts/gpu/common.sh
{
echo "== GroupNorm (channels-last, f16) kernel by kernel, with the candidates"
.gpu/gn_nhwc 200
echo
echo "== GEGLU projection (f16): two kernels against one"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
.gpu/geglu_gemm 100
} 2>&1 | tee "$OUT/session11a.txt"
