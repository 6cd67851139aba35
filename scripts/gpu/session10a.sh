#!/usr/bin/env bash
# Session 10, call A (one H200), written in session 9: sequential offload with the device synchronized
# before each streamed part is built (nn::memory::settle: the stream-ordered pool gives freed memory
# back only at a synchronization) against session 9's final binary (.gpu/shoal-bd85c1f.gz), alternated,
# each beside diffusers; the pool's used and reserved peaks per phase; the images of the two.
#   bash scripts/gpu/session10a.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
gunzip -c .gpu/shoal-bd85c1f.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
for r in 1 2; do
  for b in old new; do
    bin=$S; [ $b = old ] && bin=/tmp/shoal-old
    echo "== $b, run $r: sequential offload, 10 steps, batch 1, beside diffusers"
    $bin -v bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 1 --reps 2 --offload sequential --peer diffusers 2>&1 \
      | grep -E "peak|^\| 1 |peaked" | sed 's/^shoal\[rank 0\/1 [^]]*\] //' | sort | uniq -c
  done
done
for b in old new; do
  bin=$S; [ $b = old ] && bin=/tmp/shoal-old
  $bin generate "$P" --model /tmp/sd15 --steps 10 --seed 3 --device cuda --dtype f16 --offload sequential --out /tmp/img-$b --quiet > /dev/null 2>&1 || echo "$b: rc $?"
done
echo "new vs old, sequential: $($S image-diff /tmp/img-old/*.png /tmp/img-new/*.png 2>&1)"
} 2>&1 | tee "$OUT/session10a.txt"
