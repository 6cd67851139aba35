#!/usr/bin/env bash
# Builds crates/shoal-kernels/bench/attn_flash.cu (the many-keys attention kernel and candidates) into
# .gpu/attn_flash on this machine with the CUDA 13 toolchain of ../shared/gpu/setup-cuda.sh; a GPU
# session script then runs `.gpu/attn_flash [iters]`, which prints its table.
#   bash scripts/gpu/flash-bench.sh
set -eu
source ~/.cache/cuda-13.0/env.sh
mkdir -p .gpu
nvcc -O3 -arch=sm_90a -std=c++17 -cudart static -Xptxas -v -o .gpu/attn_flash crates/shoal-kernels/bench/attn_flash.cu
strip .gpu/attn_flash
echo ".gpu/attn_flash"
