#!/usr/bin/env bash
# Session 8, call F (one H200): the VAE decode freeing each ResNet's input once its shortcut has
# replaced it and the upsample's input before its convolution; sequential offload beside diffusers
# with the pool's used and reserved peaks per phase and per decoder step (-vv); an image with
# sequential offload against the resident one (same bits expected).
#   bash scripts/gpu/session8f.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== sequential offload, 10 steps, batch 1, beside diffusers"
$S -vv bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 1 --reps 2 --offload sequential --peer diffusers 2>&1 \
  | grep -E "peak|^\| 1 |peaked" | sed 's/^shoal\[rank 0\/1 [^]]*\] //' | sort | uniq -c
echo "== an image with sequential offload against the resident one"
for m in resident sequential; do
  extra=""; [ $m = sequential ] && extra="--offload sequential"
  $S generate "$P" --model /tmp/sd15 --steps 10 --seed 3 --device cuda --dtype f16 $extra --out /tmp/img-$m --quiet > /dev/null 2>&1 || echo "$m: rc $?"
done
$S image-diff "/tmp/img-resident/$(ls /tmp/img-resident | grep png | head -1)" "/tmp/img-sequential/$(ls /tmp/img-sequential | grep png | head -1)"
} 2>&1 | tee "$OUT/session8f.txt"
