#!/usr/bin/env bash
# Channels-last A/B in one call: per-op checks (NCHW and NHWC rows) beside PyTorch, sd15 512² with
# SHOAL_LAYOUT=nchw against the default (NHWC) and diffusers on the same files, a profile, the image check.
#   bash scripts/gpu/nhwc.sh [batches] [steps]
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
B=${1:-1,8,16}; STEPS=${2:-30}
gunzip -c .gpu/shoal.gz > /tmp/shoal && chmod +x /tmp/shoal
source .gpu/device-env.sh
S=/tmp/shoal
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/gpu.txt"
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
echo "== ops f16"; $S bench ops --dtype f16 --batches 2,16 --peer torch > "$OUT/ops-f16.md" 2>&1; tail -3 "$OUT/ops-f16.md"
grep -E "FAIL|fell" "$OUT/ops-f16.md" | head
echo "== ops bf16/f32 checks"; for d in bf16 f32; do $S bench ops --dtype $d --batches 2 --iters 3 2>&1 | grep -E "FAIL|fell|passed|failed|rror"; done | tee "$OUT/ops-other.txt"
echo "== sd15 nchw"; SHOAL_LAYOUT=nchw $S bench sd --model /tmp/sd15 --device cuda --steps "$STEPS" --batches "$B" --reps 3 2>&1 | tee "$OUT/sd-nchw.md"
echo "== sd15 nhwc"; $S bench sd --model /tmp/sd15 --device cuda --steps "$STEPS" --batches "$B" --reps 3 2>&1 | tee "$OUT/sd-nhwc.md"
echo "== diffusers"; python3 .gpu/sd_bench.py /tmp/sd15 "$STEPS" "$B" 2>&1 | grep -E "^rank|FLOPs" | tee "$OUT/sd-diffusers.txt"
echo "== profile"; SHOAL_PROFILE=1 $S bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 8 --reps 1 > "$OUT/profile.md" 2>&1; tail -16 "$OUT/profile.md"
echo "== images"
SHOAL_PLAIN_KERNELS=1 $S generate "a red fox in the snow" --model /tmp/sd15 --steps "$STEPS" --seed 3 --device cuda --dtype f32 --out /tmp/img-ref --quiet
for d in f32 f16 bf16; do $S generate "a red fox in the snow" --model /tmp/sd15 --steps "$STEPS" --seed 3 --device cuda --dtype $d --out /tmp/img-$d --quiet; done
for v in f32 f16 bf16; do echo "f32 plain vs $v fast:"; $S image-diff /tmp/img-ref/*.png /tmp/img-$v/*.png; done 2>&1 | tee "$OUT/images.txt"
