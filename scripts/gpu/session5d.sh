#!/usr/bin/env bash
# Fourth call of session 5 (issue 11): the feed-forward output GEMM with the residual add in it
# (cuBLASLt, beta = 1) checked and timed; sd15 batches 1, 8, 16 beside eager diffusers measured the
# same way (scripts/gpu/peer_sd.py: same peak-memory measure as `shoal bench sd`); the event profile;
# image checks; SDXL 1024² batches 1 and 4; sequential offload at 10 steps.
#   bash scripts/gpu/session5d.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
for d in f16 bf16 f32; do
  echo "== ops $d"; $S bench ops --dtype $d --batches 2,16 --only out 2>&1 | grep -v "^Warning"
done
echo "== sd15 shoal"; $S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8,16 --reps 3 2>&1 | grep -v "^Warning\|^{"
echo "== sd15 diffusers eager"; python3 scripts/gpu/peer_sd.py /tmp/sd15 --steps 30 --batches 1,8,16 --reps 3 2>&1 | grep -vi "warn\|deprecat\|Loading"
echo "== profile"; SHOAL_PROFILE=1 $S bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 8 --reps 2 2>&1 | grep -v "^Warning\|^{"
SHOAL_PLAIN_KERNELS=1 $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype f32 --out /tmp/img-ref --quiet > /dev/null 2>&1
for d in f16 bf16; do
  $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype $d --out /tmp/img-$d --quiet > /dev/null 2>&1
  echo "f32 plain vs $d fast:"; $S image-diff /tmp/img-ref/*.png /tmp/img-$d/*.png 2>&1
done
echo "== sequential offload, 10 steps"
$S bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 1 --reps 1 --offload sequential 2>&1 | grep -v "^Warning\|^{"
python3 scripts/gpu/peer_sd.py /tmp/sd15 --steps 10 --batches 1 --reps 1 --offload sequential 2>&1 | grep -vi "warn\|deprecat\|Loading"
echo "== sdxl 1024²"
t=$SECONDS; $S make-model --preset sdxl --dtype f16 --out /tmp/sdxl > /dev/null 2>&1; echo "make-model sdxl: $((SECONDS-t)) s"
$S bench sd --model /tmp/sdxl --device cuda --steps 30 --height 1024 --width 1024 --batches 1,4 --reps 2 2>&1 | grep -v "^Warning\|^{"
python3 scripts/gpu/peer_sd.py /tmp/sdxl --size 1024 --steps 30 --batches 1,4 --reps 2 2>&1 | grep -vi "warn\|deprecat\|Loading"
} 2>&1 | tee "$OUT/session5d.txt"
