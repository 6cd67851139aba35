#!/usr/bin/env bash
# Session 12, call A (one H200): attention over few keys (the cross-attention over the 77 text tokens)
# as shoal's own kernel (csrc/fused.cu attn_few_keys, d 40/64/80) instead of cuDNN's SDPA. (1) bench
# ops' attention rows, f16 beside PyTorch and bf16, each few-keys row with cuDNN's SDPA on the same
# inputs beside it and the checks against the plain path; (2) alternated bench sd at batches 1 and 8
# against session 11's final binary (.gpu/shoal-s11.gz) and the image of each; the f32 plain path's
# PSNR to the new f16 one, bf16; (3) the tiny presets on the GPU against the CPU.
#   bash scripts/gpu/session12a.sh
set -u
source scripts/gpu/common.sh
gunzip -c .gpu/shoal-s11.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== bench ops, cross-attention rows (f16, beside PyTorch)"
$S bench ops --device cuda --dtype f16 --batches 2,16 --only cross --peer torch 2>&1 | grep -E "cross|fell|^\| op"
echo "== bench ops, cross-attention rows (bf16)"
$S bench ops --device cuda --dtype bf16 --batches 2,16 --only cross 2>&1 | grep -E "cross|fell|^\| op"
echo "== A/B: old = session 11's final binary, new = few-keys attention"
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
} 2>&1 | tee "$OUT/session12a.txt"
