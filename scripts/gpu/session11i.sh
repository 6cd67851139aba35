#!/usr/bin/env bash
# Session 11, call I (one H200): the first image of a new process on an empty driver cache, session 10's
# final binary (.gpu/shoal-s10.gz) and this session's alternated, each on its own empty cache.
#   bash scripts/gpu/session11i.sh
set -u
source scripts/gpu/common.sh
gunzip -c .gpu/shoal-s10.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
NEW=$S
{
for r in 1 2; do
  S=/tmp/shoal-old; first "old-$r" "/tmp/cache-old-$r"
  S=$NEW; first "new-$r" "/tmp/cache-new-$r"
done
} 2>&1 | tee "$OUT/session11i.txt"
