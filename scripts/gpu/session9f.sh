#!/usr/bin/env bash
# Session 9, call F (one H200): sequential offload beside diffusers twice more on the session's final
# binary (diffusers' peak moved between 0.51 and 0.82 GiB across calls), with the pool's peaks per phase.
#   bash scripts/gpu/session9f.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
for r in 1 2; do
  echo "== sequential offload, 10 steps, batch 1, beside diffusers (run $r)"
  $S -v bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 1 --reps 2 --offload sequential --peer diffusers 2>&1 \
    | grep -E "peak|^\| 1 |peaked" | sed 's/^shoal\[rank 0\/1 [^]]*\] //' | sort | uniq -c
done
} 2>&1 | tee "$OUT/session9f.txt"
