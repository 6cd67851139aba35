#!/usr/bin/env bash
# Session 11, call H (one H200): the final binary's first image in a new process on an empty driver cache,
# then the whole op table beside PyTorch (f16), into $OUT/ops11h-f16.md.
#   bash scripts/gpu/session11h.sh
set -u
source scripts/gpu/common.sh
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== first image, new process, empty driver cache"
first empty-cache /tmp/cache-empty
echo "== bench ops f16 beside PyTorch (table in ops11h-f16.md)"
$S bench ops --device cuda --dtype f16 --batches 2,16 --iters 50 --peer torch > "$OUT/ops11h-f16.md" 2>&1
echo "rc $?"
grep -E "geometric|under|FAIL|passed|failed|fell" "$OUT/ops11h-f16.md" | head -20
} 2>&1 | tee "$OUT/session11h.txt"
