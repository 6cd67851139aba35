#!/usr/bin/env bash
# Builds the stripped release binary with the GPU features into .gpu/ (ignored), ready to
# travel to a GPU machine. Needs the CUDA 13.0 build toolchain of ../shared/gpu/setup-cuda.sh.
#   scripts/gpu/build.sh            # features cuda,nccl,cudnn,fused (needs scripts/gpu/setup-kernels.sh)
#   FEATURES=cuda,nccl scripts/gpu/build.sh   # without the fast kernels
set -euo pipefail
cd "$(dirname "$0")/../.."
ENV=${CUDA_ENV:-$HOME/.cache/cuda-13.0/env.sh}
if [ ! -f "$ENV" ]; then
  echo "no CUDA toolchain at $ENV: run ../shared/gpu/setup-cuda.sh first" >&2
  exit 2
fi
# shellcheck disable=SC1090
source "$ENV"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/gpu}
# The cudnn feature compiles a shim against cudnn-frontend's headers (a PyPI wheel).
case "${FEATURES:-cuda,nccl,cudnn,fused}" in
  *cudnn*) [ -n "${CUDNN_FRONTEND_INCLUDE:-}" ] || export CUDNN_FRONTEND_INCLUDE=$(bash scripts/gpu/setup-kernels.sh) ;;
esac
cargo build --release --locked --features "${FEATURES:-cuda,nccl,cudnn,fused}" --bin shoal
mkdir -p .gpu
cp -f "$CARGO_TARGET_DIR/release/shoal" .gpu/shoal
for f in device-env.sh; do
  [ -f ../shared/gpu/$f ] && cp -f ../shared/gpu/$f .gpu/
done
cp -f scripts/gpu/test.sh .gpu/ 2>/dev/null || true
ls -la .gpu/shoal
