#!/usr/bin/env bash
# One call (issue 11): the first image after start on an empty driver compute cache (a fresh
# machine) with the kernel modules as embedded SASS, and the same with SHOAL_SASS=0 (the
# driver's JIT of the PTX, as before); then the steady state beside eager diffusers and
# torch.compile in the same call, and the image checks.
#   bash scripts/gpu/session5.sh
set -u
source scripts/gpu/common.sh
$S env | tee "$OUT/env.txt"
t0=$(date +%s.%N); $S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
echo "make-model sd15: $(el "$t0") s"
first sass-empty-cache /tmp/cc-a
first sass-again /tmp/cc-a
first jit-empty-cache /tmp/cc-b SHOAL_SASS=0
echo "SASS image vs JIT image:"; $S image-diff /tmp/first-sass-empty-cache/*.png /tmp/first-jit-empty-cache/*.png 2>&1
echo "== steady state"; $S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 5 2>&1 | grep -v "^Warning\|^{" | tee "$OUT/sd.md"
SHOAL_PLAIN_KERNELS=1 $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype f32 --out /tmp/img-ref --quiet > /dev/null 2>&1
echo "f32 plain vs f16 fast:"; $S image-diff /tmp/img-ref/*.png /tmp/first-sass-again/*.png 2>&1 | tee "$OUT/images.txt"
echo "== profile"; SHOAL_PROFILE=1 $S bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 8 --reps 2 2>&1 | grep -v "^Warning\|^{" | tee "$OUT/profile.md"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
cp scripts/gpu/compile_peer.py /tmp/
timeout 330 python3 /tmp/compile_peer.py /tmp/sd15 30 1,8 2>&1 | grep -vi "warn" | tee "$OUT/diffusers.txt"
