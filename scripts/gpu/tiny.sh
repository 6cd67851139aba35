#!/usr/bin/env bash
# The tiny presets on the fast path: each GPU image (f32/f16/bf16) against the CPU image, and which ops fell back.
#   bash scripts/gpu/tiny.sh
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
gunzip -c .gpu/shoal.gz > /tmp/shoal && chmod +x /tmp/shoal
source .gpu/device-env.sh
S=/tmp/shoal; fails=0
for p in tiny tiny-sd2 tiny-sdxl; do
  $S make-model --preset $p --out /tmp/$p > /dev/null 2>&1 || { echo "make-model $p failed"; fails=$((fails+1)); continue; }
  $S generate "a red fox" --model /tmp/$p --steps 20 --seed 1 --device cpu --dtype f32 --out /tmp/img-$p-cpu --quiet
  for dt in f32 f16 bf16; do
    $S generate "a red fox" --model /tmp/$p --steps 20 --seed 1 --device cuda --dtype $dt --out /tmp/img-$p-$dt --quiet || { echo "FAIL generate $p $dt"; fails=$((fails+1)); continue; }
    echo -n "$p cuda $dt vs cpu f32: "; $S image-diff /tmp/img-$p-cpu/*.png /tmp/img-$p-$dt/*.png --max 0.1 || fails=$((fails+1))
  done
  $S bench sd --model /tmp/$p --device cuda --steps 4 --batches 2 --reps 1 --height 64 --width 64 2>&1 | grep -E "fell back|error" | sort -u
done
echo "failures: $fails"
