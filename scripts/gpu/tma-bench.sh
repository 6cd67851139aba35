#!/usr/bin/env bash
# Builds crates/shoal-kernels/bench/attn_tma.cu (the many-keys attention kernel on the copy engine,
# its configurations) into .gpu/attn_tma on this machine with the CUDA 13
# toolchain of ../shared/gpu/setup-cuda.sh (the driver's libcuda stub to link cuTensorMapEncodeTiled);
# a GPU session script then runs `.gpu/attn_tma [iters]`, which prints its tables.
#   bash scripts/gpu/tma-bench.sh
set -eu
source ~/.cache/cuda-13.0/env.sh
mkdir -p .gpu
nvcc -O3 -gencode=arch=compute_90a,code=sm_90a -std=c++17 -cudart static -Xptxas -v \
  -L"$(dirname "$CUDA_HOME")/../../stub" -L"$HOME/.cache/cuda-13.0/stub" -lcuda \
  -o .gpu/attn_tma crates/shoal-kernels/bench/attn_tma.cu 2>&1 | grep -E "tma_k|registers|spill|error|warning|Potential" | grep -B1 -A2 -E "tma_k|error|warning|Potential" | head -80
strip .gpu/attn_tma
echo ".gpu/attn_tma"
