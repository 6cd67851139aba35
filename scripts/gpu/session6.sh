#!/usr/bin/env bash
# Session 6's checks, for the first GPU call after it (one H200): every kernel's op impl now comes
# from shoal-kernels' op.rs (cuda_only!), so `bench ops` checks each against the plain path in
# f16, bf16 and f32; the first image on an empty driver cache with the model hashed beside the
# load (ModelIdentity::start: the -v log says how long the job waited for the hash), then with the
# cuDNN plans built ahead on 16 threads (SHOAL_CUDNN_PREBUILD, opt-in until this call); the per-op
# table against PyTorch in the same call (bench ops --peer torch); then the side-by-side table at
# batches 1 and 8 against eager diffusers.
#   bash scripts/gpu/session6.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
first empty "$(mktemp -d)" SHOAL_CACHE_DIR="$(mktemp -d)"
grep -E "waited" "$OUT/first-empty.log" | sed 's/^/    /'
# The cuDNN plans built ahead on 16 threads (SHOAL_CUDNN_PREBUILD), against the lazy build above: the
# first image on an empty cache, and the same image (cuDNN may pick other engines: within 1/255).
first prebuild "$(mktemp -d)" SHOAL_CACHE_DIR="$(mktemp -d)" SHOAL_CUDNN_PREBUILD=16
grep -E "built ahead" "$OUT/first-prebuild.log" | sed 's/^/    /'
for f in /tmp/first-empty/*.png; do $S image-diff "$f" "/tmp/first-prebuild/$(basename "$f")" 2>&1 | sed 's/^/    /'; done
first warm-up "$HOME/.nv/warm6" SHOAL_CUDNN_PREBUILD=16 > /dev/null
first prebuild-warm "$HOME/.nv/warm6" SHOAL_CUDNN_PREBUILD=16
first lazy-warm "$HOME/.nv/warm6"
for d in f16 bf16 f32; do
  echo "== ops $d (check)"; $S bench ops --dtype $d --batches 2 --iters 3 2>&1 | grep -E "FAIL|fell|passed|failed"
done
echo "== ops f16 against PyTorch (--peer torch)"
$S bench ops --dtype f16 --batches 2,16 --peer torch 2>&1 | grep -v "^Warning" > "$OUT/ops-f16-torch.md"
sed -n '/^ops_peer.py:/,$p' "$OUT/ops-f16-torch.md"
echo "== sequential offload, 10 steps (the VAE decoder now streamed layer by layer)"
$S bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 1 --reps 2 --offload sequential --peer diffusers 2>&1 | grep -v "^Warning\|^{"
echo "== eager"
$S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 3 --peer diffusers 2>&1 | grep -v "^Warning\|^{"
} 2>&1 | tee "$OUT/session6.txt"
