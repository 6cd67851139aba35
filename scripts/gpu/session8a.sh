#!/usr/bin/env bash
# Session 8, call A (one H200): the cuBLASLt linear refactor (lt_linear) checked in f16 and bf16;
# cuDNN's engine choice timed per plan (SHOAL_CUDNN_TUNE=8: the heuristic's first 8 candidates
# built, the fastest kept on the first call) against the heuristic's first choice: every op
# against PyTorch both ways, sd15 batches 1 and 8 alternated, the first image's cost, and whether
# two processes with timing on still write the same image bits.
#   bash scripts/gpu/session8a.sh   (with the binary of that call: SHOAL_CUDNN_TUNE was removed after it,
#   as the timed choice gained nothing; the patch is kept in docs/runs/2026-12-01-h200-s8a-tuning.patch)
set -u
source scripts/gpu/common.sh
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
one() { # label env...
  local label=$1; shift
  env CUDA_CACHE_PATH=$HOME/.nv/warm8a "$@" $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda \
    --dtype f16 --out "/tmp/det-$label" --quiet > /dev/null 2>&1 || echo "$label: rc $?"
}
diffpair() { $S image-diff "/tmp/det-$1/$(ls /tmp/det-$1 | grep png | head -1)" "/tmp/det-$2/$(ls /tmp/det-$2 | grep png | head -1)" 2>&1 | sed "s/^/    $1 vs $2: /"; }
{
for d in f16 bf16; do
  echo "== ops $d (check; bits between two calls)"
  $S bench ops --dtype $d --batches 2,16 --iters 5 2>&1 | grep -E "FAIL|fell|passed|failed|not bit-reproducible" | head -30
done
for t in 0 8; do
  echo "== ops f16 against PyTorch, SHOAL_CUDNN_TUNE=$t (table in ops-tune$t.md)"
  SHOAL_CUDNN_TUNE=$t $S bench ops --dtype f16 --batches 2,16 --peer torch > "$OUT/ops-tune$t.md" 2>&1
  echo "rc $?"; grep -E "geometric|under 0.8|cuDNN engine timing|plans built" "$OUT/ops-tune$t.md"
done
echo "== sd15 SHOAL_CUDNN_TUNE=0 (A) against =8 (B), alternated, batch 1 and 8"
for r in 1 2; do
  for t in 0 8; do
    echo "-- tune $t"; SHOAL_CUDNN_TUNE=$t $S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 3 2>&1 | grep -E "^\| [0-9]|engine timing"
  done
done
echo "== first image (warm driver cache)"
first warm $HOME/.nv/warm8a SHOAL_CUDNN_TUNE=0 > /dev/null
first tune0 $HOME/.nv/warm8a SHOAL_CUDNN_TUNE=0
first tune8 $HOME/.nv/warm8a SHOAL_CUDNN_TUNE=8
echo "== the same image bits in two processes with timing on?"
one t8a SHOAL_CUDNN_TUNE=8; one t8b SHOAL_CUDNN_TUNE=8; one t0 SHOAL_CUDNN_TUNE=0
diffpair t8a t8b; diffpair t0 t8a
} 2>&1 | tee "$OUT/session8a.txt"
rm -f "$OUT"/first-*.log
