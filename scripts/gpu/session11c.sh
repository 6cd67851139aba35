#!/usr/bin/env bash
# Session 11, call C (one H200): (1) the GEGLU projection bench (.gpu/geglu_gemm, with CUTLASS's own GEMM
# beside it); (2) the binary with the one-GEMM GEGLU (feature gemm) against session 10's final binary
# (.gpu/shoal-s10.gz): the bench ops GEGLU rows (f16, bf16) with their checks against the plain path,
# alternated bench sd at batches 1 and 8, the image of each, the f32 plain path's PSNR to the new one,
# bf16; the tiny presets on the GPU against the CPU.
#   bash scripts/gpu/session11c.sh
set -u
source scripts/gpu/common.sh
gunzip -c .gpu/shoal-s10.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== GEGLU projection (f16): two kernels against one"
.gpu/geglu_gemm 100
echo "== bench ops, the GEGLU rows (new binary)"
for d in f16 bf16; do $S bench ops --device cuda --dtype $d --batches 2,16 --only geglu 2>&1 | grep -E "geglu|fell|^\| op"; done
echo "== A/B: old = session 10's final binary, new = the one-GEMM GEGLU"
alternate /tmp/shoal-old
images /tmp/shoal-old img --steps 30 --dtype f16
echo "== the f32 plain path against the new one (30 steps, seed 3)"
SHOAL_PLAIN_KERNELS=1 $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype f32 --out /tmp/img-ref --quiet > /dev/null 2>&1 || echo "f32 plain: rc $?"
$S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype bf16 --out /tmp/img-bf16 --quiet > /dev/null 2>&1 || echo "bf16: rc $?"
echo "fast f16 new: $($S image-diff /tmp/img-ref/*.png /tmp/img-new/*.png 2>&1)"
echo "fast f16 old: $($S image-diff /tmp/img-ref/*.png /tmp/img-old/*.png 2>&1)"
echo "fast bf16 new: $($S image-diff /tmp/img-ref/*.png /tmp/img-bf16/*.png 2>&1)"
echo "== tiny presets, GPU against CPU"
bash scripts/gpu/tiny.sh 2>&1 | grep -E "vs cpu|fell|failures|FAIL"
} 2>&1 | tee "$OUT/session11c.txt"
