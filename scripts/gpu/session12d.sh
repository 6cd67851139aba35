#!/usr/bin/env bash
# Session 12, call D (one H200): the final binary (the SDPA and few-keys views checked by one function,
# op::view_fits): (1) bench ops' attention rows with their checks (f16); (2) the tiny presets on the GPU
# against the CPU; (3) SDXL at 1024² beside eager diffusers at batches 1 and 4 (its cross-attention at
# width 64 stays on cuDNN's SDPA, so this is a check that nothing moved, not a new figure's cause).
#   bash scripts/gpu/session12d.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
{
for o in self cross; do
  echo "== bench ops, $o-attention rows (f16)"
  $S bench ops --device cuda --dtype f16 --batches 2,16 --only $o 2>&1 | grep -E "$o|fell|^\| op"
done
echo "== tiny presets, GPU against CPU"
bash scripts/gpu/tiny.sh 2>&1 | grep -E "vs cpu|fell|failures|FAIL"
echo "== sdxl 1024² beside diffusers, batches 1, 4"
t=$SECONDS; $S make-model --preset sdxl --dtype f16 --out /tmp/sdxl > /dev/null 2>&1; echo "make-model sdxl: $((SECONDS-t)) s"
$S bench sd --model /tmp/sdxl --device cuda --steps 30 --height 1024 --width 1024 --batches 1,4 --reps 2 --peer diffusers 2>&1 \
  | grep -E "^\||peak|fell"
} 2>&1 | tee "$OUT/session12d.txt"
