#!/usr/bin/env bash
# One call (issue 11, "first image after start ≤ 10 s"): the time from a start to the first image with an
# empty driver compute cache (CUDA_CACHE_PATH fresh: a fresh machine) and with a warm one; sd15, 512², 30
# steps, f16, batch 1. Then the steady state beside eager diffusers in the same call, and the f16 image
# against the f32 plain one. (The first call of this script also timed a parallel in-process PTX
# "prewarm", since removed: docs/PERFORMANCE.md.)
#   bash scripts/gpu/prewarm.sh
set -u
source scripts/gpu/common.sh
export CUDA_CACHE_PATH=${CUDA_CACHE_PATH:-/tmp/cc-a}
t0=$(date +%s.%N); $S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
echo "make-model sd15: $(el "$t0") s"
[ -n "${SKIP_COLD:-}" ] || first cold-cache /tmp/cc-a
first warm-cache /tmp/cc-a
echo "== steady state"; $S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 5 2>&1 | grep -v "^Warning\|^{" | tee "$OUT/sd.md"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
python3 .gpu/sd_bench.py /tmp/sd15 30 1,8 2>&1 | grep -E "^rank" | tee "$OUT/sd-diffusers.txt"
SHOAL_PLAIN_KERNELS=1 $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype f32 --out /tmp/img-ref --quiet > /dev/null 2>&1
echo "f32 plain vs f16 fast:"; $S image-diff /tmp/img-ref/*.png /tmp/first-warm-cache/*.png 2>&1 | tee "$OUT/images.txt"
