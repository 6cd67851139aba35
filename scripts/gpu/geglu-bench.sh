#!/usr/bin/env bash
# Builds crates/shoal-kernels/bench/geglu_gemm.cu (the GEGLU projection: the binary's two kernels
# against the one CUTLASS GEMM of csrc/geglu_gemm.cu) into .gpu/geglu_gemm on this machine, with the
# CUDA 13 toolchain of ../shared/gpu/setup-cuda.sh and the CUTLASS headers of setup-kernels.sh; a GPU
# session script then runs `.gpu/geglu_gemm [iters]`, which prints its table.
#   bash scripts/gpu/geglu-bench.sh
set -eu
source ~/.cache/cuda-13.0/env.sh
CUTLASS=${CUTLASS_INCLUDE:-$(bash scripts/gpu/setup-kernels.sh cutlass)}
mkdir -p .gpu
nvcc -O3 -arch=sm_90a -std=c++17 --expt-relaxed-constexpr -DNDEBUG -I "$CUTLASS" -cudart static \
  -o .gpu/geglu_gemm crates/shoal-kernels/bench/geglu_gemm.cu -L"$CUDA_HOME/lib" -lcublasLt
strip .gpu/geglu_gemm
echo ".gpu/geglu_gemm"
