#!/usr/bin/env bash
# Session 7, call B (one H200), with CUDA graphs and the cuDNN plans built ahead both on by
# default: whether a run's image depends on them (each pair in separate processes on a warm driver
# cache: op by op twice, graphs twice, plans lazy against ahead), then the side-by-side tables:
# `bench sd --peer diffusers` at batches 1, 4, 8, 16; `bench ops --peer torch`; sequential offload.
#   bash scripts/gpu/session7b.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
mkdir -p "$OUT"
one() { # label env...
  local label=$1; shift
  env CUDA_CACHE_PATH=$HOME/.nv/warm7b "$@" $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda \
    --dtype f16 --out "/tmp/det-$label" --quiet > "$OUT/det-$label.log" 2>&1 || echo "$label: rc $?"
}
diffpair() { $S image-diff "/tmp/det-$1/$(ls /tmp/det-$1 | grep png | head -1)" "/tmp/det-$2/$(ls /tmp/det-$2 | grep png | head -1)" 2>&1 | sed "s/^/    $1 vs $2: /"; }
{
echo "== does the image depend on the run? (separate processes, same seed)"
one warm SHOAL_CUDA_GRAPHS=0 SHOAL_CUDNN_PREBUILD=0
one e1 SHOAL_CUDA_GRAPHS=0 SHOAL_CUDNN_PREBUILD=0
one e2 SHOAL_CUDA_GRAPHS=0 SHOAL_CUDNN_PREBUILD=0
one g1 SHOAL_CUDA_GRAPHS=1 SHOAL_CUDNN_PREBUILD=0
one g2 SHOAL_CUDA_GRAPHS=1 SHOAL_CUDNN_PREBUILD=0
one p1 SHOAL_CUDA_GRAPHS=0 SHOAL_CUDNN_PREBUILD=16
one p2 SHOAL_CUDA_GRAPHS=0 SHOAL_CUDNN_PREBUILD=16
one d1
diffpair e1 e2; diffpair g1 g2; diffpair e1 g1; diffpair p1 p2; diffpair e1 p1; diffpair e1 d1
echo "== eager diffusers beside shoal (defaults: graphs on, plans built ahead)"
$S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,4,8,16 --reps 3 --peer diffusers 2>&1 | grep -v "^Warning\|^{"
echo "== ops f16 against PyTorch (--peer torch)"
$S bench ops --dtype f16 --batches 2,16 --peer torch 2>&1 | grep -v "^Warning" > "$OUT/ops-f16-torch.md"
sed -n '/^ops_peer.py:/,$p' "$OUT/ops-f16-torch.md" | tail -30
echo "== sequential offload, 10 steps (the VAE decoder streamed layer by layer)"
$S bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 1 --reps 2 --offload sequential --peer diffusers 2>&1 | grep -v "^Warning\|^{"
} 2>&1 | tee "$OUT/session7b.txt"
