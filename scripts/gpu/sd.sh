#!/usr/bin/env bash
# shoal against diffusers on the same sd15 files, one call: profile, side-by-side throughput, image check.
#   bash scripts/gpu/sd.sh [batches] [steps]
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
B=${1:-1,4,8,16}; STEPS=${2:-30}
gunzip -c .gpu/shoal.gz > /tmp/shoal && chmod +x /tmp/shoal
source .gpu/device-env.sh
S=/tmp/shoal
[ -d /tmp/sd15 ] || $S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
echo "== profile (10 steps, batch 8)"; SHOAL_PROFILE=1 $S bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 8 --reps 1 2>&1 | tee "$OUT/profile.md"
echo "== shoal"; $S bench sd --model /tmp/sd15 --device cuda --steps "$STEPS" --batches "$B" --reps 3 2>&1 | tee "$OUT/sd-fast.md"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
echo "== diffusers"; python3 .gpu/sd_bench.py /tmp/sd15 "$STEPS" "$B" 2>&1 | grep -E "^rank|FLOPs" | tee "$OUT/sd-diffusers.txt"
echo "== image check"
SHOAL_PLAIN_KERNELS=1 $S generate "a red fox in the snow" --model /tmp/sd15 --steps "$STEPS" --seed 3 --device cuda --dtype f32 --out /tmp/img-ref --quiet
for d in f32 f16 bf16; do $S generate "a red fox in the snow" --model /tmp/sd15 --steps "$STEPS" --seed 3 --device cuda --dtype $d --out /tmp/img-$d --quiet; done
for v in f32 f16 bf16; do echo "f32 plain vs $v fast:"; $S image-diff /tmp/img-ref/*.png /tmp/img-$v/*.png; done 2>&1 | tee "$OUT/images.txt"
