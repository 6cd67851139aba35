#!/usr/bin/env bash
# Builds crates/shoal-kernels/bench/gn_nhwc.cu (the channels-last GroupNorm, kernel by kernel) into
# .gpu/gn_nhwc on this machine with the CUDA 13 toolchain of ../shared/gpu/setup-cuda.sh; a GPU
# session script then runs `.gpu/gn_nhwc [iters]`, which prints its table.
#   bash scripts/gpu/gn-bench.sh
set -eu
source ~/.cache/cuda-13.0/env.sh
mkdir -p .gpu
nvcc -O3 -arch=sm_${CUDA_COMPUTE_CAP:-90} -std=c++17 -cudart static -o .gpu/gn_nhwc crates/shoal-kernels/bench/gn_nhwc.cu
strip .gpu/gn_nhwc
echo ".gpu/gn_nhwc"
