#!/usr/bin/env bash
# Session 9, call B (one H200): the VAE decode's ResNets with a shortcut writing their first
# GroupNorm over the input (sequential offload beside diffusers, the pool's peaks per phase and per
# decoder step; the images of the new binary against those of call A's, carried as
# .gpu/shoal-9a.gz); cudnn-frontend's two SDPA implementations (SHOAL_CUDNN_SDPA=composite|unified,
# unset = the frontend's choice, logged) on every attention row of bench ops beside PyTorch, now with
# the batch-16 rows over 2^31 scores; then batch 8 end to end under each.
#   bash scripts/gpu/session9b.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
gunzip -c .gpu/shoal-9a.gz > /tmp/shoal-9a && chmod +x /tmp/shoal-9a
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== sequential offload, 10 steps, batch 1, beside diffusers"
$S -vv bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 1 --reps 2 --offload sequential --peer diffusers 2>&1 \
  | grep -E "peak|^\| 1 |peaked" | sed 's/^shoal\[rank 0\/1 [^]]*\] //' | grep -v "up [01] " | sort | uniq -c
for b in new old; do
  bin=$S; [ $b = old ] && bin=/tmp/shoal-9a
  for m in resident sequential; do
    extra=""; [ $m = sequential ] && extra="--offload sequential"
    $bin generate "$P" --model /tmp/sd15 --steps 10 --seed 3 --device cuda --dtype f16 $extra --out /tmp/img-$b-$m --quiet > /dev/null 2>&1 || echo "$b $m: rc $?"
  done
done
png() { echo "/tmp/img-$1/$(ls /tmp/img-$1 | grep png | head -1)"; }
for pair in "new-resident old-resident" "new-sequential old-sequential" "new-resident new-sequential"; do
  set -- $pair; echo "image $1 vs $2: $($S image-diff "$(png $1)" "$(png $2)")"
done
for impl in auto composite unified; do
  echo "== attention rows, SHOAL_CUDNN_SDPA=$impl"
  for only in "self d" "cross d"; do
    env SHOAL_CUDNN_SDPA=$impl CUDNN_FRONTEND_LOG_INFO=1 CUDNN_FRONTEND_LOG_FILE=stdout \
      $S bench ops --dtype f16 --batches 2,16 --only "$only" --peer torch > /tmp/ops-$impl.txt 2>&1
    grep -oE "Auto-selected SDPA implementation [A-Z]+" /tmp/ops-$impl.txt | sort | uniq -c
    grep -E "heads|fell|failed|passed|geometric|rror" /tmp/ops-$impl.txt | grep -v "INFO"
  done
done
for impl in auto composite; do
  echo "== sd15 batch 8, SHOAL_CUDNN_SDPA=$impl"
  env SHOAL_CUDNN_SDPA=$impl $S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 8 --reps 3 2>&1 | grep -E "^\| 8 |fell"
done
} 2>&1 | tee "$OUT/session9b.txt"
