#!/usr/bin/env bash
# Session 9, call E (one H200): the session's final binary beside eager diffusers (sd15, batches
# 1–16), where an SDXL 1024² batch of 4 goes (SHOAL_PROFILE=1, 10 steps), and the op table against
# PyTorch with the feed-forward output's bias-only rows set apart (the models always add the
# residual there).
#   bash scripts/gpu/session9e.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== the session's binary beside eager diffusers"
$S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,4,8,16 --reps 3 --peer diffusers 2>&1 \
  | grep -E "^\||peak|first image"
echo "== SDXL 1024², batch 4, 10 steps, profiled"
$S make-model --preset sdxl --dtype f16 --out /tmp/sdxl > /dev/null 2>&1
SHOAL_PROFILE=1 $S bench sd --model /tmp/sdxl --device cuda --steps 10 --height 1024 --width 1024 --batches 4 --reps 1 2>&1 | grep -v "^Warning\|^{"
echo "== ops f16 against PyTorch (table in ops9e-f16.md)"
$S bench ops --dtype f16 --batches 2,16 --iters 50 --peer torch > "$OUT/ops9e-f16.md" 2>&1
echo "rc $?"; grep -E "geometric|under 0.8|rows apart|FAIL|failed|passed" "$OUT/ops9e-f16.md"
sed -n '/^ops_peer.py:/,$p' "$OUT/ops9e-f16.md" | grep "×" | grep -v "not run by" \
  | awk -F'|' '{r=$7; gsub(/[ ×]/,"",r); if (r+0 < 1.0) print "under 1x: " $0}'
} 2>&1 | tee "$OUT/session9e.txt"
