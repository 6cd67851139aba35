#!/usr/bin/env bash
# Where a UNet step goes, per kind of op (SHOAL_PROFILE=1: each op synchronized), sd15 512², f16.
#   bash scripts/gpu/profile.sh [batches] [steps]
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
gunzip -c .gpu/shoal.gz > /tmp/shoal && chmod +x /tmp/shoal
source .gpu/device-env.sh
S=/tmp/shoal
[ -d /tmp/sd15 ] || $S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
SHOAL_PROFILE=1 $S bench sd --model /tmp/sd15 --device cuda --steps "${2:-10}" --batches "${1:-1,8}" --reps 1 2>&1 | tee "$OUT/profile.md"
