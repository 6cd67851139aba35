#!/usr/bin/env bash
# One call (issue 11, "first image after start ≤ 10 s"): the time from a cold start to the first image,
# with an empty driver compute cache each time (CUDA_CACHE_PATH fresh), without and with the parallel
# PTX prewarm, then with the warm cache; sd15, 512², 30 steps, f16, batch 1. Then a batch-8 check of the
# steady state (no regression from this session's progress/log changes) and the f16 image vs f32 plain.
#   bash scripts/gpu/prewarm.sh
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
gunzip -c .gpu/shoal.gz > /tmp/shoal && chmod +x /tmp/shoal
source .gpu/device-env.sh
S=/tmp/shoal
el() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }
t0=$(date +%s.%N); $S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
echo "make-model sd15: $(el "$t0") s"
P="a red fox in the snow"
first() {  # $1 label, $2 cache dir, rest: env
  local label=$1 cache=$2; shift 2
  local t=$(date +%s.%N)
  env CUDA_CACHE_PATH="$cache" "$@" $S -v generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda \
    --dtype f16 --out "/tmp/first-$label" --quiet > "$OUT/first-$label.log" 2>&1
  local rc=$?
  echo "first image, $label: $(el "$t") s (rc $rc)"
  grep -E "prewarm|loaded" "$OUT/first-$label.log" | sed 's/^/    /'
}
first cold-no-prewarm /tmp/cc-a SHOAL_PREWARM=0
first cold-prewarm /tmp/cc-b
first warm-cache /tmp/cc-b
first warm-cache-no-prewarm /tmp/cc-b SHOAL_PREWARM=0
echo "== steady state"; $S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 3 2>&1 | grep -v "^Warning\|^{" | tee "$OUT/sd.md"
SHOAL_PLAIN_KERNELS=1 $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype f32 --out /tmp/img-ref --quiet > /dev/null 2>&1
echo "f32 plain vs f16 fast:"; $S image-diff /tmp/img-ref/*.png /tmp/first-warm-cache/*.png 2>&1 | tee "$OUT/images.txt"
