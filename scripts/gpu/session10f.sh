#!/usr/bin/env bash
# Session 10, call F (one H200): the session's final binary beside eager diffusers (sd15 512², batches
# 1-16), sequential offload beside diffusers twice (-v: the pool's peaks per phase), the whole op
# table against PyTorch in f16 and the first image of a new process on an empty driver cache.
#   bash scripts/gpu/session10f.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== first image, new process"
first empty-cache /tmp/cc-empty
echo "== the session's binary beside eager diffusers"
$S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,4,8,16 --reps 3 --peer diffusers 2>&1 \
  | grep -E "^\||peak|first image"
for r in 1 2; do
  echo "== sequential offload, 10 steps, batch 1, beside diffusers, run $r"
  $S -v bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 1 --reps 2 --offload sequential --peer diffusers 2>&1 \
    | grep -E "peak|^\| 1 |peaked" | sed 's/^shoal\[rank 0\/1 [^]]*\] //' | sort | uniq -c
done
echo "== ops f16 against PyTorch (table in ops10f-f16.md)"
$S bench ops --dtype f16 --batches 2,16 --iters 50 --peer torch > "$OUT/ops10f-f16.md" 2>&1
echo "rc $?"; grep -E "geometric|under 0.8|rows apart|FAIL|failed|passed" "$OUT/ops10f-f16.md"
sed -n '/^ops_peer.py:/,$p' "$OUT/ops10f-f16.md" | grep "×" | grep -v "not run by" \
  | awk -F'|' '{r=$7; gsub(/[ ×]/,"",r); if (r+0 < 1.0) print "under 1x: " $0}'
} 2>&1 | tee "$OUT/session10f.txt"
