#!/usr/bin/env bash
# Session 9, call A (one H200), written in session 8: what session 8 could not measure. The VAE
# decode freeing a ResNet's input once its shortcut replaced it (sequential offload beside diffusers,
# the pool's peaks per phase and per decoder step, -vv); the plain attention in blocks of query rows
# (bench ops' VAE mid-block rows at 512² and 1024², checked against the f32 plain path and PyTorch;
# SDXL 1024² at batches 1, 4 and 8 beside diffusers, batch 8 being the first whose VAE attention has
# more than 2^31 scores); the image with sequential offload against the resident one; the channels-last
# GroupNorm written over its input (bench ops' in-place rows, f16 and bf16).
#   bash scripts/gpu/session9a.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== sequential offload, 10 steps, batch 1, beside diffusers"
$S -vv bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 1 --reps 2 --offload sequential --peer diffusers 2>&1 \
  | grep -E "peak|^\| 1 |peaked" | sed 's/^shoal\[rank 0\/1 [^]]*\] //' | grep -v "up [012]" | sort | uniq -c
for m in resident sequential; do
  extra=""; [ $m = sequential ] && extra="--offload sequential"
  $S generate "$P" --model /tmp/sd15 --steps 10 --seed 3 --device cuda --dtype f16 $extra --out /tmp/img-$m --quiet > /dev/null 2>&1 || echo "$m: rc $?"
done
$S image-diff "/tmp/img-resident/$(ls /tmp/img-resident | grep png | head -1)" "/tmp/img-sequential/$(ls /tmp/img-sequential | grep png | head -1)"
for d in f16 bf16; do
  echo "== group_norm $d: the in-place rows (same bits as writing a new tensor), every check"
  $S bench ops --dtype $d --batches 2,16 --only group_norm 2>&1 | grep -E "in place|FAIL|passed|failed|not bit-reproducible" | sort | uniq -c | head
done
echo "== the VAE's mid-block attention rows"
$S bench ops --dtype f16 --only "vae mid" --peer torch 2>&1 | grep -E "vae mid|fell|passed|failed|geometric"
echo "== sdxl 1024² beside diffusers, batches 1, 4, 8"
t=$SECONDS; $S make-model --preset sdxl --dtype f16 --out /tmp/sdxl > /dev/null 2>&1; echo "make-model sdxl: $((SECONDS-t)) s"
$S bench sd --model /tmp/sdxl --device cuda --steps 30 --height 1024 --width 1024 --batches 1,4,8 --reps 2 --peer diffusers 2>&1 \
  | grep -E "^\||peak|fell"
} 2>&1 | tee "$OUT/session9a.txt"
