#!/usr/bin/env bash
# Session 11, call D (one H200): the one-GEMM GEGLU with its configurations chosen by the tile count
# (cooperative 256×128 where the tiles fill the GPU 2.5 times, else ping-pong 64×128): (1) the GEGLU
# bench; (2) bench ops' GEGLU rows beside PyTorch (f16); (3) alternated bench sd at batches 1 and 8
# against session 10's final binary (.gpu/shoal-s10.gz) and the image of each; (4) the new binary
# beside eager diffusers at batches 1, 4, 8 and 16.
#   bash scripts/gpu/session11d.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
gunzip -c .gpu/shoal-s10.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== GEGLU projection (f16): two kernels against one"
.gpu/geglu_gemm 100
echo "== bench ops, the GEGLU rows beside PyTorch (f16)"
$S bench ops --device cuda --dtype f16 --batches 2,16 --only geglu --peer torch 2>&1 | grep -E "geglu|fell|^\| op"
echo "== A/B: old = session 10's final binary, new = the one-GEMM GEGLU"
alternate /tmp/shoal-old
images /tmp/shoal-old img --steps 30 --dtype f16
echo "== the new binary beside eager diffusers"
$S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,4,8,16 --reps 3 --peer diffusers 2>&1 \
  | grep -E "^\||peak"
} 2>&1 | tee "$OUT/session11d.txt"
