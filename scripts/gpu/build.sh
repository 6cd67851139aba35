#!/usr/bin/env bash
# Builds the stripped release binary with the GPU features into .gpu/ (ignored), ready to
# travel to a GPU machine. Needs the CUDA 13.0 build toolchain of ../shared/gpu/setup-cuda.sh.
#   scripts/gpu/build.sh            # features cuda,nccl,cudnn,fused,gemm,sass (needs scripts/gpu/setup-kernels.sh)
#   FEATURES=cuda,nccl scripts/gpu/build.sh   # without the fast kernels
# With `sass` (the default) every kernel module is embedded as SASS for the GPU the PTX
# targets (CUDA_COMPUTE_CAP, 90 on the H200): candle-core is copied from the registry and
# given one hook (scripts/gpu/patch-candle.py, through a cargo [patch] in this build
# only), the binary dumps its modules' PTX, ptxas compiles each, and a second build
# embeds them. Cargo.lock is restored afterwards (the patch changes candle-core's source).
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
# The gemm feature compiles csrc/geglu_gemm.cu against CUTLASS's headers (a PyPI wheel).
case "${FEATURES:-cuda,nccl,cudnn,fused,gemm}" in
  *gemm*) [ -n "${CUTLASS_INCLUDE:-}" ] || export CUTLASS_INCLUDE=$(bash scripts/gpu/setup-kernels.sh cutlass) ;;
esac
FEATURES=${FEATURES:-cuda,nccl,cudnn,fused,gemm,sass}
case "$FEATURES" in
  *sass*)
    # The candle-core that Cargo.lock names, as cargo downloaded it.
    cargo fetch --locked >/dev/null
    ver=$(awk '/^name = "candle-core"$/{getline; gsub(/"/, "", $3); print $3}' Cargo.lock)
    src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/candle-core-"$ver" | head -1)
    patched=$CARGO_TARGET_DIR/patched/candle-core-$ver
    if [ ! -f "$patched/.shoal-patched" ] || [ scripts/gpu/patch-candle.py -nt "$patched/.shoal-patched" ]; then
      python3 scripts/gpu/patch-candle.py "$src" "$patched" >/dev/null
      touch "$patched/.shoal-patched"
    fi
    export SHOAL_SASS_DIR=$PWD/$CARGO_TARGET_DIR/sass
    mkdir -p "$SHOAL_SASS_DIR"
    cp Cargo.lock "$CARGO_TARGET_DIR/Cargo.lock.orig"
    trap 'cp "$CARGO_TARGET_DIR/Cargo.lock.orig" Cargo.lock' EXIT
    PATCH=(--config "patch.crates-io.candle-core.path=\"$PWD/$patched\"")
    ;;
  *) PATCH=(--locked) ;;
esac
build() { cargo build --release "${PATCH[@]}" --features "$FEATURES" --bin shoal; }
build
case "$FEATURES" in
  *sass*)
    # Dump the PTX the binary carries, compile what has no image yet, drop stale images.
    ptx=$CARGO_TARGET_DIR/sass-ptx
    rm -rf "$ptx"
    # The binary runs here without a GPU: the toolchain's libraries and its libcuda stub.
    mkdir -p "$CARGO_TARGET_DIR/stub"
    ln -sf "$(dirname "$ENV")/stub/libcuda.so" "$CARGO_TARGET_DIR/stub/libcuda.so.1"
    LD_LIBRARY_PATH="$CARGO_TARGET_DIR/stub:$CUDA_HOME/lib:$CUDA_HOME/../nccl/lib" \
      "$CARGO_TARGET_DIR/release/shoal" kernel-ptx "$ptx" >/dev/null
    changed=0
    for f in "$SHOAL_SASS_DIR"/*.cubin; do
      [ -e "$f" ] || continue
      [ -f "$ptx/$(basename "${f%.cubin}").ptx" ] || { rm -f "$f"; changed=1; }
    done
    t0=$(date +%s)
    pids=()
    for f in "$ptx"/*.ptx; do
      stem=$(basename "${f%.ptx}")
      case "$stem" in *-shoal-fused) continue ;; esac   # shoal's own: built by its build.rs
      [ -f "$SHOAL_SASS_DIR/$stem.cubin" ] && continue
      arch=$(awk '/^\.target/{print $2; exit}' "$f" | tr -d ',')
      ptxas -arch="$arch" -O3 "$f" -o "$SHOAL_SASS_DIR/$stem.cubin.tmp" &&
        mv "$SHOAL_SASS_DIR/$stem.cubin.tmp" "$SHOAL_SASS_DIR/$stem.cubin" &
      pids+=($!)
      changed=1
    done
    for p in "${pids[@]}"; do wait "$p"; done
    if [ "$changed" = 1 ]; then
      echo "ptxas: $(ls "$SHOAL_SASS_DIR" | wc -l) image(s) in $(( $(date +%s) - t0 )) s; building again with them" >&2
      build
    fi
    ;;
esac
mkdir -p .gpu
cp -f "$CARGO_TARGET_DIR/release/shoal" .gpu/shoal
for f in device-env.sh; do
  [ -f ../shared/gpu/$f ] && cp -f ../shared/gpu/$f .gpu/
done
cp -f scripts/gpu/test.sh .gpu/ 2>/dev/null || true
ls -la .gpu/shoal
