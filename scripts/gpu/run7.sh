#!/usr/bin/env bash
# GPU call 7: `shoal bench sd` reporting its own peak GPU memory for each placement mode (sd15, batch 1, 512², 10 steps, f16).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
gunzip -c .gpu/shoal.gz > /tmp/shoal && chmod +x /tmp/shoal
source .gpu/device-env.sh
S=/tmp/shoal
export CUDA_VISIBLE_DEVICES=0,1
L="$OUT/bench-modes.log"; : > "$L"
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
$S generate x --model /tmp/sd15 --steps 1 --height 64 --width 64 --device cuda:0 --dtype f16 --out /tmp/w --quiet > /dev/null 2>&1
for mode in "--device cuda:0" "--device-map balanced --max-memory 0=3GB,1=3GB" "--device cuda:0 --offload model" "--device cuda:0 --offload sequential"; do
  echo "== $mode" >> "$L"
  timeout 100 $S bench sd --model /tmp/sd15 --batches 1 --reps 1 --steps 10 $mode 2>&1 | grep -E "^\| 1|peak|device map|error" >> "$L"
done
cat "$L"
