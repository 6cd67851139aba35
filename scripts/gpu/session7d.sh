#!/usr/bin/env bash
# Session 7, call D (one H200): SDXL 1024² with the UNet's CUDA graphs beside eager diffusers
# (graphs on, then off for the A/B); sequential offload with no plans built ahead (its default now)
# beside diffusers; the per-op table against PyTorch with the NCHW rows set apart.
#   bash scripts/gpu/session7d.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== sequential offload, 10 steps, batch 1 (no plans built ahead)"
$S -v bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 1 --reps 2 --offload sequential --peer diffusers 2>&1 \
  | grep -E "^\||peak|peaked|built ahead" | sort | uniq -c | sort -rn
echo "== sdxl 1024²"
t=$SECONDS; $S make-model --preset sdxl --dtype f16 --out /tmp/sdxl > /dev/null 2>&1; echo "make-model sdxl: $((SECONDS-t)) s"
SHOAL_CUDA_GRAPHS=0 $S bench sd --model /tmp/sdxl --device cuda --steps 30 --height 1024 --width 1024 --batches 1,4 --reps 2 2>&1 | grep -E "^\||peak|CUDA graph"
$S bench sd --model /tmp/sdxl --device cuda --steps 30 --height 1024 --width 1024 --batches 1,4 --reps 2 --peer diffusers 2>&1 | grep -E "^\||peak|CUDA graph|fell back"
echo "== ops f16 against PyTorch (--peer torch; NCHW rows apart)"
$S bench ops --dtype f16 --batches 2,16 --peer torch 2>&1 | grep -v "^Warning" > "$OUT/ops-f16-torch.md"
sed -n '/^ops_peer.py:/,$p' "$OUT/ops-f16-torch.md" | tail -4
} 2>&1 | tee "$OUT/session7d.txt"
