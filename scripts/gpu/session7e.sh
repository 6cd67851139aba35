#!/usr/bin/env bash
# Session 7, call E (one H200): the linear layers with a bias as one cuBLASLt GEMM with the bias in
# its epilogue (f16/bf16), checked in f16 and bf16 and timed against PyTorch; whether any kernel's bits
# change between two calls on the same inputs (bench ops names it); then the new binary against the
# previous one (.gpu/shoal-prev.gz, session 7 call D's), alternated, sd15 batches 1 and 8.
#   bash scripts/gpu/session7e.sh
set -u
source scripts/gpu/common.sh
gunzip -c .gpu/shoal-prev.gz > /tmp/shoal-prev && chmod +x /tmp/shoal-prev
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
for d in f16 bf16; do
  echo "== ops $d (check; bits between two calls)"
  $S bench ops --dtype $d --batches 2,16 --iters 5 2>&1 | grep -E "FAIL|fell|passed|failed|not bit-reproducible" | head -30
done
echo "== linear rows against PyTorch"
$S bench ops --dtype f16 --batches 2,16 --only " out" --peer torch 2>&1 | sed -n '/^ops_peer.py:/,$p'
echo "== new (A) against previous (B), alternated"
for r in 1 2; do
  for b in A B; do
    bin=$S; [ $b = B ] && bin=/tmp/shoal-prev
    echo "-- $b"; $bin bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 3 2>&1 | grep -E "^\| [0-9]"
  done
done
} 2>&1 | tee "$OUT/session7e.txt"
