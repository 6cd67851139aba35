#!/usr/bin/env bash
# Next session, call A (one H200), written in session 10: the channels-last GroupNorm's kernels one by
# one with two candidates for the partial sums (a warp per group reducing the block's slots; chunks of
# 8K elements, twice the blocks) as CUDA graphs, and their largest difference from the binary's output
# (.gpu/gn_nhwc from scripts/gpu/gn-bench.sh). If a candidate is faster on the model shapes, port it to
# csrc/fused.cu and A/B the binary at batches 1 and 8 (common.sh's `alternate`, `images`).
#   bash scripts/gpu/session11a.sh
set -u
source scripts/gpu/common.sh
{
echo "== GroupNorm (channels-last, f16) kernel by kernel, with the candidates"
.gpu/gn_nhwc 200
} 2>&1 | tee "$OUT/session11a.txt"
