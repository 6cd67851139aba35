#!/usr/bin/env bash
# Session 7, call A (one H200): the UNet's call recorded as a CUDA graph and replayed
# (SHOAL_CUDA_GRAPHS, on by default in this build) against the same binary op by op:
# the same images (sd15 with PNDM, Euler ancestral and DPM-Solver++; tiny-sdxl for the added
# conditioning; 3 images in batches of 2 so the graph is replaced when the shape changes), the
# steady state at batches 1 and 8 side by side; then session 6's first-image checks (the cuDNN
# plans built lazily and ahead, on an empty and a warm driver cache) and the kernel checks.
#   bash scripts/gpu/session7a.sh
set -u
source scripts/gpu/common.sh
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
$S make-model --preset tiny-sdxl --out /tmp/txl > /dev/null 2>&1
gen() { # label graphs model scheduler
  local out=/tmp/gen-$1-g$2
  SHOAL_CUDA_GRAPHS=$2 $S -v generate "$P" --model "$3" --steps 30 --seed 3 --device cuda --dtype f16 \
    --images-per-prompt 3 --batch-size 2 ${4:+--scheduler $4} --out "$out" --quiet > "$OUT/gen-$1-g$2.log" 2>&1
  echo "$1 graphs=$2: rc $? $(grep -E "CUDA graph" "$OUT/gen-$1-g$2.log" | tail -1)"
  grep -E "capture failed|ERROR|error:" "$OUT/gen-$1-g$2.log" | head -3 | sed 's/^/    /'
}
{
echo "== graphs against op by op (image-diff of each image pair)"
for c in "sd15-pndm /tmp/sd15" "sd15-eulera /tmp/sd15 euler-a" "sd15-dpm /tmp/sd15 dpm++2m" "txl /tmp/txl"; do
  set -- $c
  gen "$1" 0 "$2" "${3:-}"; gen "$1" 1 "$2" "${3:-}"
  for f in /tmp/gen-$1-g0/*.png; do $S image-diff "$f" "/tmp/gen-$1-g1/$(basename "$f")" 2>&1 | sed 's/^/    /'; done
done
echo "== steady state, graphs on then off then on"
for g in 1 0 1; do
  echo "-- SHOAL_CUDA_GRAPHS=$g"
  SHOAL_CUDA_GRAPHS=$g $S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 3 2>&1 | grep -E "^\||CUDA graph|first image|peak|fell back"
done
echo "== profile, batch 1, 10 steps (graphs are off under SHOAL_PROFILE: where the op-by-op call goes)"
SHOAL_PROFILE=1 $S bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 1 --reps 2 2>&1 | grep -v "^Warning\|^{" | head -60
first empty "$(mktemp -d)" SHOAL_CACHE_DIR="$(mktemp -d)"
grep -E "waited|CUDA graph" "$OUT/first-empty.log" | sed 's/^/    /'
first prebuild "$(mktemp -d)" SHOAL_CACHE_DIR="$(mktemp -d)" SHOAL_CUDNN_PREBUILD=16
grep -E "built ahead|CUDA graph" "$OUT/first-prebuild.log" | sed 's/^/    /'
for f in /tmp/first-empty/*.png; do $S image-diff "$f" "/tmp/first-prebuild/$(basename "$f")" 2>&1 | sed 's/^/    /'; done
first warm-up "$HOME/.nv/warm7" SHOAL_CUDNN_PREBUILD=16 > /dev/null
first prebuild-warm "$HOME/.nv/warm7" SHOAL_CUDNN_PREBUILD=16
first lazy-warm "$HOME/.nv/warm7"
for d in f16 bf16 f32; do
  echo "== ops $d (check)"; $S bench ops --dtype $d --batches 2 --iters 3 2>&1 | grep -E "FAIL|fell|passed|failed"
done
} 2>&1 | tee "$OUT/session7a.txt"
