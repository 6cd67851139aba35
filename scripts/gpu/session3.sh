#!/usr/bin/env bash
# One call: GroupNorm rows after the warp-per-group finalize, sd15 side by side with diffusers, the image
# check, CFG parallelism (+ split VAE decode) on one shared GPU against one process, the model identity cost.
#   bash scripts/gpu/session3.sh
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
gunzip -c .gpu/shoal.gz > /tmp/shoal && chmod +x /tmp/shoal
source .gpu/device-env.sh
S=/tmp/shoal
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
echo "== ops (group_norm)"; $S bench ops --dtype f16 --batches 2,16 --only group_norm 2>&1 | grep -v "^Warning\|^{" > "$OUT/ops-gn.md"; grep -c PASS "$OUT/ops-gn.md"; grep -E "FAIL|fell" "$OUT/ops-gn.md"
$S bench ops --dtype bf16 --batches 2 --only group_norm --iters 3 2>&1 | grep -E "FAIL|passed|failed"
echo "== sd15"; $S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8,16 --reps 3 2>&1 | grep -v "^Warning\|^{" | tee "$OUT/sd.md"
python3 .gpu/sd_bench.py /tmp/sd15 30 1,8,16 2>&1 | grep -E "^rank" | tee "$OUT/sd-diffusers.txt"
echo "== profile"; SHOAL_PROFILE=1 $S bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 8 --reps 1 2>&1 | grep -v "^Warning\|^{" > "$OUT/profile.md"; grep -E "group_norm|UNet|VAE|conv2d" "$OUT/profile.md"
echo "== images"
P="a red fox in the snow"
SHOAL_PLAIN_KERNELS=1 $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype f32 --out /tmp/img-ref --quiet 2>&1 | tail -1
$S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype f16 --out /tmp/img-f16 2>&1 | tail -2
$S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype f16 --out /tmp/img-f16 --resume 2>&1 | tail -2
echo "== cfg-parallel on one shared GPU (2 processes; correctness only, no speed-up expected)"
SHOAL_ALLOW_GPU_SHARING=1 $S launch -n 2 -- $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --dtype f16 --out /tmp/img-cfg --cfg-parallel --quiet 2>&1 | tail -1
SHOAL_ALLOW_GPU_SHARING=1 $S launch -n 2 -- $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --dtype f16 --out /tmp/img-vae --cfg-parallel --vae-parallel --quiet 2>&1 | tail -1
SHOAL_ALLOW_GPU_SHARING=1 $S launch -n 2 -- $S bench vae --model /tmp/sd15 --dtype f16 --height 1024 --width 1024 --reps 3 --max-diff 0.01 2>&1 | grep -v "^Warning\|^{\|^\[rank 1\]" | tail -6
{ echo "f32 plain vs f16 fast:"; $S image-diff /tmp/img-ref/*.png /tmp/img-f16/*.png
  echo "f16 one process vs f16 --cfg-parallel:"; $S image-diff /tmp/img-f16/*.png /tmp/img-cfg/*.png
  echo "f16 one process vs f16 --cfg-parallel --vae-parallel:"; $S image-diff /tmp/img-f16/*.png /tmp/img-vae/*.png; } 2>&1 | tee "$OUT/images.txt"
