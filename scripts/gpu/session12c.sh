#!/usr/bin/env bash
# Session 12, call C (one H200): the final binary, the few-keys kernel taken only where call B measured
# it faster than cuDNN's SDPA (width 40; width 80 up to 32768 query rows; `nn::few_keys_kernel`).
# (1) bench ops' cross-attention rows, f16 and bf16; (2) the image against session 11's binary's;
# (3) the tiny presets on the GPU against the CPU; (4) the whole op table beside PyTorch (f16).
#   bash scripts/gpu/session12c.sh
set -u
source scripts/gpu/common.sh
gunzip -c .gpu/shoal-s11.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
for d in f16 bf16; do
  echo "== bench ops, cross-attention rows ($d)"
  $S bench ops --device cuda --dtype $d --batches 2,16 --only cross 2>&1 | grep -E "cross|fell|^\| op"
done
images /tmp/shoal-old img --steps 30 --dtype f16
echo "== tiny presets, GPU against CPU"
bash scripts/gpu/tiny.sh 2>&1 | grep -E "vs cpu|fell|failures|FAIL"
echo "== the op table beside PyTorch (f16)"
$S bench ops --device cuda --dtype f16 --batches 2,16 --iters 50 --peer torch > "$OUT/session12c-ops-f16.md" 2>&1
grep -E "geometric|under" "$OUT/session12c-ops-f16.md"
} 2>&1 | tee "$OUT/session12c.txt"
