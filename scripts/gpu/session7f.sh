#!/usr/bin/env bash
# Session 7, call F (one H200): the channels-last GroupNorm's partial sums without atomics (a slot
# per row of lanes and channel, added in a fixed order): its check and bits between two calls, its
# time against PyTorch; whether an image now has the same bits in separate processes, op by op and
# with CUDA graphs; and the new binary against call E's (.gpu/shoal-prev.gz), alternated.
#   bash scripts/gpu/session7f.sh
set -u
source scripts/gpu/common.sh
gunzip -c .gpu/shoal-prev.gz > /tmp/shoal-prev && chmod +x /tmp/shoal-prev
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
one() { # label env...
  local label=$1; shift
  env CUDA_CACHE_PATH=$HOME/.nv/warm7f "$@" $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda \
    --dtype f16 --out "/tmp/det-$label" --quiet > /dev/null 2>&1 || echo "$label: rc $?"
}
diffpair() { $S image-diff "/tmp/det-$1/$(ls /tmp/det-$1 | grep png | head -1)" "/tmp/det-$2/$(ls /tmp/det-$2 | grep png | head -1)" 2>&1 | sed "s/^/    $1 vs $2: /"; }
{
for d in f16 bf16; do
  echo "== group_norm $d (check; bits between two calls)"
  $S bench ops --dtype $d --batches 2,16 --only group_norm 2>&1 | grep -E "FAIL|passed|failed|not bit-reproducible" | head
done
echo "== group_norm f16 against PyTorch"
$S bench ops --dtype f16 --batches 2,16 --only group_norm --peer torch 2>&1 | sed -n '/^ops_peer.py:/,$p' | grep -E "nhwc|geometric|NCHW rows"
echo "== the same image in separate processes?"
one warm SHOAL_CUDA_GRAPHS=0
one e1 SHOAL_CUDA_GRAPHS=0; one e2 SHOAL_CUDA_GRAPHS=0; one g1; one g2
diffpair e1 e2; diffpair g1 g2; diffpair e1 g1
echo "== new (A) against call E's binary (B), alternated, batch 1 and 8"
for r in 1 2; do
  for b in A B; do
    bin=$S; [ $b = B ] && bin=/tmp/shoal-prev
    echo "-- $b"; $bin bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 3 2>&1 | grep -E "^\| [0-9]"
  done
done
} 2>&1 | tee "$OUT/session7f.txt"
