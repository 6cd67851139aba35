#!/usr/bin/env bash
# What the fast kernels need at build time, beside ../shared/gpu/setup-cuda.sh --cudnn (CUDA 13 + cuDNN 9.19
# headers), from PyPI, unpacked where shoal-kernels' build.rs looks. Idempotent.
#   scripts/gpu/setup-kernels.sh           # the header-only cudnn-frontend; prints its include dir
#                                          # (override with CUDNN_FRONTEND_INCLUDE)
#   scripts/gpu/setup-kernels.sh cutlass   # CUTLASS's headers (the wheel nvidia-cutlass); prints
#                                          # its include dir (override with CUTLASS_INCLUDE)
#   bash ../shared/gpu/setup-cuda.sh --cudnn && bash scripts/gpu/setup-kernels.sh && scripts/gpu/build.sh
set -euo pipefail
fetch() { # DIR PACKAGE VERSION: the wheel's files under DIR/pkg
  local dir=$1 pkg=$2 version=$3
  if [ ! -e "$dir/.done-$version" ]; then
    mkdir -p "$dir"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
      --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 -d "$dir" "$pkg==$version"
    for w in "$dir"/"${pkg//-/_}"-"$version"-*.whl; do unzip -q -o "$w" -d "$dir/pkg"; done
    touch "$dir/.done-$version"
  fi
}
case "${1:-cudnn-frontend}" in
  cutlass)
    DIR=${CUTLASS_PREFIX:-$HOME/.cache/cutlass-pypi}
    fetch "$DIR" nvidia-cutlass 4.2.0.0
    echo "$DIR/pkg/cutlass_library/source/include"
    ;;
  *)
    DIR=${CUDNN_FE_PREFIX:-$HOME/.cache/cudnn-fe}
    fetch "$DIR" nvidia-cudnn-frontend 1.32.0
    echo "$DIR/pkg/include"
    ;;
esac
