#!/usr/bin/env bash
# Session 8, call E (one H200): conv_out (fewer than 8 output channels) with a zero residual fused,
# checked in f16 and bf16; the op table against PyTorch with each row marked by what the models run;
# sequential offload beside diffusers twice; the session's binary beside eager diffusers.
#   bash scripts/gpu/session8e.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
for d in f16 bf16; do
  echo "== conv ops $d (check; bits between two calls)"
  $S bench ops --dtype $d --batches 2,16 --iters 5 --only conv 2>&1 | grep -E "FAIL|fell|passed|failed|not bit-reproducible" | head
done
echo "== ops f16 against PyTorch (table in ops8e-f16.md)"
$S bench ops --dtype f16 --batches 2,16 --iters 50 --peer torch > "$OUT/ops8e-f16.md" 2>&1
echo "rc $?"; grep -E "geometric|under 0.8|rows apart|FAIL|failed" "$OUT/ops8e-f16.md"
sed -n '/^ops_peer.py:/,$p' "$OUT/ops8e-f16.md" | grep "×" | grep -v "not run by" \
  | awk -F'|' '{r=$7; gsub(/[ ×]/,"",r); if (r+0 < 1.0) print "under 1x: " $0}'
for r in 1 2; do
  echo "== sequential offload, 10 steps, batch 1, beside diffusers (run $r)"
  $S -v bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 1 --reps 2 --offload sequential --peer diffusers 2>&1 \
    | grep -E "peak|^\| 1 |peaked" | sort | uniq -c
done
echo "== the session's binary beside eager diffusers"
$S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,4,8,16 --reps 3 --peer diffusers 2>&1 \
  | grep -E "^\||peak|first image"
} 2>&1 | tee "$OUT/session8e.txt"
