#!/usr/bin/env bash
# Second call of session 5 (issue 11) — as it ran; SHOAL_CUDNN_PRECOMPILED was removed after it (it
# changed no plan). Where the rest of a fresh machine's first image goes
# (cuDNN plan builds, with SHOAL_CUDNN_PRECOMPILED=0/1), the fused LayerNorm (+ residual add)
# checked and timed, the steady state beside eager diffusers, the event profile, image checks.
#   bash scripts/gpu/session5b.sh
set -u
source scripts/gpu/common.sh
t0=$(date +%s.%N); $S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
echo "make-model sd15: $(el "$t0") s"
first heuristics-empty-cache /tmp/cc-a
first precompiled-empty-cache /tmp/cc-b SHOAL_CUDNN_PRECOMPILED=1
first heuristics-warm /tmp/cc-a
first precompiled-warm /tmp/cc-b SHOAL_CUDNN_PRECOMPILED=1
echo "run to run:"; $S image-diff /tmp/first-heuristics-empty-cache/*.png /tmp/first-heuristics-warm/*.png 2>&1
echo "precompiled vs heuristics:"; $S image-diff /tmp/first-heuristics-warm/*.png /tmp/first-precompiled-warm/*.png 2>&1
for d in f16 bf16 f32; do
  echo "== ops $d"; $S bench ops --dtype $d --batches 2,16 --only layer_norm 2>&1 | grep -v "^Warning" | tee "$OUT/ops-ln-$d.md"
done
echo "== steady state"; $S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 5 2>&1 | grep -v "^Warning\|^{" | tee "$OUT/sd.md"
echo "== steady state, precompiled cuDNN engines"; SHOAL_CUDNN_PRECOMPILED=1 $S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 5 2>&1 | grep -v "^Warning\|^{" | tee "$OUT/sd-precompiled.md"
echo "== profile"; SHOAL_PROFILE=1 $S bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 8 --reps 2 2>&1 | grep -v "^Warning\|^{" | tee "$OUT/profile.md"
SHOAL_PLAIN_KERNELS=1 $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype f32 --out /tmp/img-ref --quiet > /dev/null 2>&1
echo "f32 plain vs f16 fast:"; $S image-diff /tmp/img-ref/*.png /tmp/first-heuristics-warm/*.png 2>&1 | tee "$OUT/images.txt"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
python3 .gpu/sd_bench.py /tmp/sd15 30 1,8 2>&1 | grep -E "^rank" | tee "$OUT/sd-diffusers.txt"
