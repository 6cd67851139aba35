#!/usr/bin/env bash
# A/B of two shoal binaries in one call (A = .gpu/old.gz, B = .gpu/shoal.gz), alternating A B A B, same
# sd15 f16 files, `bench sd --batches 1,8 --reps 3`: tells a code regression from machine variance.
#   bash scripts/gpu/ab.sh
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
gunzip -c .gpu/old.gz > /tmp/A && gunzip -c .gpu/shoal.gz > /tmp/B && chmod +x /tmp/A /tmp/B
source .gpu/device-env.sh
export CUDA_CACHE_PATH=/tmp/cc-ab
/tmp/B make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
/tmp/B generate "warm up the driver cache" --model /tmp/sd15 --steps 2 --dtype f16 --out /tmp/w --quiet > /dev/null 2>&1
for run in 1 2; do
  for v in A B; do
    echo "== $v (run $run)"
    /tmp/$v bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 3 2>&1 | grep -E "^\| [0-9]" | tee -a "$OUT/ab-$v.md"
  done
done
