#!/usr/bin/env bash
# Session 8, call D (one H200): the op table with each convolution's rows marked by what the models
# run at that shape (bias alone, or also the residual: ResNet conv2 and the transformer's output
# projection), against PyTorch (cudnn.benchmark on); then sequential offload beside diffusers twice,
# to see how far each side's peak moves between runs.
#   bash scripts/gpu/session8d.sh
set -u
source scripts/gpu/common.sh
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== ops f16 against PyTorch (table in ops8d-f16.md)"
$S bench ops --dtype f16 --batches 2,16 --iters 50 --peer torch > "$OUT/ops8d-f16.md" 2>&1
echo "rc $?"; grep -E "geometric|under 0.8|rows apart|FAIL|failed" "$OUT/ops8d-f16.md"
for r in 1 2; do
  echo "== sequential offload, 10 steps, batch 1, beside diffusers (run $r)"
  $S -v bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 1 --reps 2 --offload sequential --peer diffusers 2>&1 \
    | grep -E "peak|^\| 1 |peaked" | sort | uniq -c
done
} 2>&1 | tee "$OUT/session8d.txt"
