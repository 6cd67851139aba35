#!/usr/bin/env bash
# Session 13, call B (one H200): the flash kernel software-pipelined (the next key tile's scores
# issued before this tile's softmax; tiles of 64 keys with one 16-row tile per warp, of 32 keys with
# two). bench ops' self-attention rows, f16 beside PyTorch, cuDNN's SDPA and each tiling beside.
#   bash scripts/gpu/session13b.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
{
echo "== bench ops, self-attention rows (f16, beside PyTorch)"
$S bench ops --device cuda --dtype f16 --batches 2,16 --only self --peer torch 2>&1 | grep -E "self|fell|^\| op"
} 2>&1 | tee "$OUT/session13b.txt"
