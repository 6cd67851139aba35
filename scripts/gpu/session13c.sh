#!/usr/bin/env bash
# Session 13, calls C–G (one H200): the flash kernel on Hopper's warpgroup MMAs (wgmma, sm_90a), taken
# for width 40 over many keys. bench ops' self-attention rows: f16 beside PyTorch, cuDNN's SDPA beside
# each row the kernel takes and the kernel beside the width-64 rows it does not take; bf16 with checks.
# Call C: shared memory without swizzle; call D (run again): in the 32-byte swizzle; call E: the next
# tile's scores issued before this tile's exponentials; call F: that undone, four stages of keys and
# values in flight at width 40, three at 64; call G: fewer instructions per tile (the masking only in a
# partial tile, the copies' sources moved on by a tile, the row sums by the tensor cores at width 40).
#   bash scripts/gpu/session13c.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
{
echo "== bench ops, self-attention rows (f16, beside PyTorch)"
$S bench ops --device cuda --dtype f16 --batches 2,16 --only self --peer torch 2>&1 | grep -E "self|fell|^\| op|rror"
echo "== bench ops, self-attention rows (bf16)"
$S bench ops --device cuda --dtype bf16 --batches 2,16 --only self 2>&1 | grep -E "self|fell|^\| op|rror"
} 2>&1 | tee "$OUT/session13c.txt"
