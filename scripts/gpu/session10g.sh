#!/usr/bin/env bash
# Session 10, call G (one H200): the ResNets' time-embedding projection in conv1's bias (SD 1.x/2.x on
# the fast path) against call F's binary (.gpu/shoal-s10f.gz), alternated at batches 1 and 8; the image
# of each, and of the new one against the f32 plain path (PSNR) in f16 and bf16; the tiny presets on the
# GPU against the CPU.
#   bash scripts/gpu/session10g.sh
set -u
source scripts/gpu/common.sh
gunzip -c .gpu/shoal-s10f.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== A/B: old = call F's binary, new = time embedding in conv1's bias"
alternate /tmp/shoal-old
images /tmp/shoal-old img --steps 30 --dtype f16
echo "== the f32 plain path against each (30 steps, seed 3)"
SHOAL_PLAIN_KERNELS=1 $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype f32 --out /tmp/img-ref --quiet > /dev/null 2>&1 || echo "f32 plain: rc $?"
$S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype bf16 --out /tmp/img-bf16 --quiet > /dev/null 2>&1 || echo "bf16: rc $?"
echo "fast f16 new: $($S image-diff /tmp/img-ref/*.png /tmp/img-new/*.png 2>&1)"
echo "fast f16 old: $($S image-diff /tmp/img-ref/*.png /tmp/img-old/*.png 2>&1)"
echo "fast bf16 new: $($S image-diff /tmp/img-ref/*.png /tmp/img-bf16/*.png 2>&1)"
echo "== tiny presets, GPU against CPU"
bash scripts/gpu/tiny.sh 2>&1 | grep -E "vs cpu|fell|failures|FAIL"
} 2>&1 | tee "$OUT/session10g.txt"
