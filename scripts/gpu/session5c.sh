#!/usr/bin/env bash
# Third call of session 5 (issue 11) — as it ran; SHOAL_CUDNN_DYNAMIC was removed after it (slower,
# and NaN latents in generate). It tried cuDNN with dynamic shapes and a shared kernel cache
# (SHOAL_CUDNN_DYNAMIC=1) against the default, for the first image on an empty driver cache and
# in the steady state; the channels-last upsample and concatenation kernels checked and timed;
# steady state beside eager diffusers; the event profile; image checks.
#   bash scripts/gpu/session5c.sh
set -u
source scripts/gpu/common.sh
t0=$(date +%s.%N); $S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
echo "make-model sd15: $(el "$t0") s"
first default-empty-cache /tmp/cc-a
first dynamic-empty-cache /tmp/cc-b SHOAL_CUDNN_DYNAMIC=1
first default-warm /tmp/cc-a
first dynamic-warm /tmp/cc-b SHOAL_CUDNN_DYNAMIC=1
echo "run to run:"; $S image-diff /tmp/first-default-empty-cache/*.png /tmp/first-default-warm/*.png 2>&1
echo "dynamic vs default:"; $S image-diff /tmp/first-default-warm/*.png /tmp/first-dynamic-warm/*.png 2>&1
for d in f16 bf16 f32; do
  echo "== ops $d"; $S bench ops --dtype $d --batches 2,16 --only nhwc 2>&1 | grep -v "^Warning" | grep -v "group_norm" | tee "$OUT/ops-copies-$d.md"
done
echo "== steady state"; $S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 5 2>&1 | grep -v "^Warning\|^{" | tee "$OUT/sd.txt"
echo "== steady state, SHOAL_CUDNN_DYNAMIC=1"; SHOAL_CUDNN_DYNAMIC=1 $S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 5 2>&1 | grep -v "^Warning\|^{" | tee "$OUT/sd-dynamic.txt"
echo "== profile"; SHOAL_PROFILE=1 $S bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 8 --reps 2 2>&1 | grep -v "^Warning\|^{" | tee "$OUT/profile.txt"
SHOAL_PLAIN_KERNELS=1 $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype f32 --out /tmp/img-ref --quiet > /dev/null 2>&1
echo "f32 plain vs f16 fast:"; $S image-diff /tmp/img-ref/*.png /tmp/first-default-warm/*.png 2>&1 | tee "$OUT/images.txt"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
python3 .gpu/sd_bench.py /tmp/sd15 30 1,8 2>&1 | grep -E "^rank" | tee "$OUT/sd-diffusers.txt"
