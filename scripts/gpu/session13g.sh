#!/usr/bin/env bash
# Session 13, call G (one H200): the flash kernel with fewer instructions per tile (masking only in a
# partial tile, the copies' sources moved on by a tile, the row sums by the tensor cores at width 40),
# taken for width 40 in this binary. (1) bench ops' self-attention rows, f16 beside PyTorch, cuDNN's
# SDPA beside; (2) alternated bench sd at batches 1 and 8 against session 12's final binary, and the
# image of each (csrc/fused.cu is now built for sm_90a: every fused kernel runs from that build);
# (3) the first image of a new process on an empty driver cache.
#   bash scripts/gpu/session13g.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
gunzip -c .gpu/shoal-s12.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== bench ops, self-attention rows (f16, beside PyTorch)"
$S bench ops --device cuda --dtype f16 --batches 2,16 --only self --peer torch 2>&1 | grep -E "self|fell|^\| op|rror"
echo "== A/B: old = session 12's final binary, new = this call's"
alternate /tmp/shoal-old
images /tmp/shoal-old img --steps 30 --dtype f16
echo "== first image of a new process, empty driver cache"
first new /tmp/cache-new
} 2>&1 | tee "$OUT/session13g.txt"
