#!/usr/bin/env bash
# Session 7, call C (one H200): the LayerNorm rows against PyTorch with the add + LayerNorm row
# timing the op alone; sequential offload with the UNet streamed one layer at a time (plans built
# ahead and not; `-v` logs each phase's allocation peak) beside diffusers; the peak memory with a
# replaced graph's memory given back; torch.compile beside shoal with its graphs.
#   bash scripts/gpu/session7c.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== ops f16, LayerNorm rows, against PyTorch"
$S bench ops --dtype f16 --batches 2,16 --only layer_norm --peer torch 2>&1 | grep -E "layer_norm|FAIL|passed|geometric"
echo "== sequential offload, 10 steps, batch 1"
for pb in 0 auto; do
  echo "-- SHOAL_CUDNN_PREBUILD=$pb"
  SHOAL_CUDNN_PREBUILD=$pb $S -v bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 1 --reps 2 --offload sequential 2>&1 \
    | grep -E "^\| 1|peak GPU|peaked|built ahead" | sort | uniq -c | sort -rn | head -12
done
$S bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 1 --reps 2 --offload sequential --peer diffusers 2>&1 | grep -E "^\||peak"
echo "== model offload, 10 steps, batch 1"
$S bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 1 --reps 2 --offload model --peer diffusers 2>&1 | grep -E "^\||peak|CUDA graph"
echo "== peak memory, batches 1, 8, 16 (a replaced graph's memory given back)"
$S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8,16 --reps 2 2>&1 | grep -E "^\||peak|CUDA graph"
echo "== torch.compile beside shoal"
timeout 250 $S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 3 --peer diffusers-compiled 2>&1 | grep -v "^Warning\|^{"
} 2>&1 | tee "$OUT/session7c.txt"
