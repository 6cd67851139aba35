#!/usr/bin/env bash
# Session 11, call F (one H200; run twice: F, then G with the harness timing its variants three times in
# turn, the least kept): the GEGLU bench with three more configurations (ping-pong 128×128, with
# and without a 2×1 cluster; cooperative 256×128 with a 2×1 cluster) and the tile, stage and cluster ids
# of the cuBLASLt kernel its heuristic picks for the two-kernel form's GEMM.
#   bash scripts/gpu/session11f.sh
set -u
source scripts/gpu/common.sh
{
echo "== GEGLU projection (f16): two kernels against one"
.gpu/geglu_gemm 100
} 2>&1 | tee "$OUT/session11f.txt"
