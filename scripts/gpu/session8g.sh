#!/usr/bin/env bash
# Session 8, call G (one H200; written, not run: session 8 had no device time left for it): the VAE decode's ResNet freeing its
# input once the shortcut has replaced it; sequential offload, 10 steps, batch 1, with the pool's peaks
# per phase and per decoder step (-vv), and the image against the resident one (same bits expected).
#   bash scripts/gpu/session8g.sh
set -u
source scripts/gpu/common.sh
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
$S -vv bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 1 --reps 2 --offload sequential 2>&1 \
  | grep -E "peak|^\| 1 |peaked" | sed 's/^shoal\[rank 0\/1 [^]]*\] //' | grep -v "up [012]" | sort | uniq -c
for m in resident sequential; do
  extra=""; [ $m = sequential ] && extra="--offload sequential"
  $S generate "$P" --model /tmp/sd15 --steps 10 --seed 3 --device cuda --dtype f16 $extra --out /tmp/img-$m --quiet > /dev/null 2>&1 || echo "$m: rc $?"
done
$S image-diff "/tmp/img-resident/$(ls /tmp/img-resident | grep png | head -1)" "/tmp/img-sequential/$(ls /tmp/img-sequential | grep png | head -1)"
} 2>&1 | tee "$OUT/session8g.txt"
