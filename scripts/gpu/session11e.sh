#!/usr/bin/env bash
# Session 11, call E (one H200): SDXL at 1024² with the one-GEMM GEGLU (its 70 transformer blocks at
# widths 640 and 1280): the new binary beside eager diffusers at batches 1 and 4, then session 10's
# final binary (.gpu/shoal-s10.gz) and the new one alternated at the same batches.
#   bash scripts/gpu/session11e.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
gunzip -c .gpu/shoal-s10.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
{
echo "== sdxl 1024² beside diffusers, batches 1, 4"
t=$SECONDS; $S make-model --preset sdxl --dtype f16 --out /tmp/sdxl > /dev/null 2>&1; echo "make-model sdxl: $((SECONDS-t)) s"
$S bench sd --model /tmp/sdxl --device cuda --steps 30 --height 1024 --width 1024 --batches 1,4 --reps 2 --peer diffusers 2>&1 \
  | grep -E "^\||peak|fell"
echo "== A/B on sdxl: old = session 10's final binary, new = the one-GEMM GEGLU"
for b in old new; do
  bin=$S; [ $b = old ] && bin=/tmp/shoal-old
  echo "-- $b"
  $bin bench sd --model /tmp/sdxl --device cuda --steps 30 --height 1024 --width 1024 --batches 1,4 --reps 2 2>&1 | grep -E "^\| [0-9]"
done
} 2>&1 | tee "$OUT/session11e.txt"
