#!/usr/bin/env bash
# What the fast kernels need at build time, beside ../shared/gpu/setup-cuda.sh --cudnn (CUDA 13 + cuDNN 9.19
# headers): the header-only cudnn-frontend from PyPI, unpacked where shoal-kernels' build.rs looks
# (override with CUDNN_FRONTEND_INCLUDE). Idempotent.
#   bash ../shared/gpu/setup-cuda.sh --cudnn && bash scripts/gpu/setup-kernels.sh && scripts/gpu/build.sh
set -euo pipefail
DIR=${CUDNN_FE_PREFIX:-$HOME/.cache/cudnn-fe}
VERSION=1.32.0
if [ ! -f "$DIR/pkg/include/cudnn_frontend.h" ] || [ ! -e "$DIR/.done-$VERSION" ]; then
  mkdir -p "$DIR"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 -d "$DIR" "nvidia-cudnn-frontend==$VERSION"
  for w in "$DIR"/nvidia_cudnn_frontend-"$VERSION"-*.whl; do unzip -q -o "$w" -d "$DIR/pkg"; done
  touch "$DIR/.done-$VERSION"
fi
echo "$DIR/pkg/include"
