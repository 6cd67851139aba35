#!/usr/bin/env bash
# One GPU call for the fast kernels (issue 11): the per-op check and table against PyTorch, then the
# pipeline side by side with diffusers, then the image check (f16 fast path against the f32 plain path).
#   scripts/gpu/build.sh with FEATURES=cuda,nccl,cudnn, gzip .gpu/shoal, then on the GPU machine:
#   bash scripts/gpu/kernels.sh [steps]      # SKIP_TORCH_OPS=1, SKIP_PLAIN=1 leave those parts out
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
STEPS=${1:-30}
gunzip -c .gpu/shoal.gz > /tmp/shoal && chmod +x /tmp/shoal
source .gpu/device-env.sh
S=/tmp/shoal
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
# The per-op table, then PyTorch's same ops in the same call (--peer torch; SKIP_TORCH_OPS=1 leaves it out).
PEER=(--peer torch); [ -n "${SKIP_TORCH_OPS:-}" ] && PEER=()
echo "== bench ops f16"; $S bench ops --dtype f16 "${PEER[@]}" 2>&1 | tee "$OUT/ops-f16.md"
echo "== bench ops bf16 (check only)"; $S bench ops --dtype bf16 --batches 2 --iters 3 2>&1 | grep -E "FAIL|fell|passed|failed" | tee "$OUT/ops-bf16.txt"
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1 || echo "make-model failed"
echo "== shoal fast, profiled (10 steps)"; SHOAL_PROFILE=1 $S bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 8 --reps 1 2>&1 | tee "$OUT/profile.md"
echo "== shoal fast"; $S bench sd --model /tmp/sd15 --device cuda --steps "$STEPS" --batches 1,8 --reps 3 2>&1 | tee "$OUT/sd-fast.md"
if [ -z "${SKIP_PLAIN:-}" ]; then
  echo "== shoal plain"; SHOAL_PLAIN_KERNELS=1 $S bench sd --model /tmp/sd15 --device cuda --steps "$STEPS" --batches 1,8 --reps 1 2>&1 | tee "$OUT/sd-plain.md"
fi
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
echo "== diffusers"; python3 .gpu/sd_bench.py /tmp/sd15 "$STEPS" 1,8 2>&1 | grep -v Warn | tee "$OUT/sd-diffusers.txt"
echo "== image check"
$S generate "a red fox in the snow" --model /tmp/sd15 --steps "$STEPS" --seed 3 --device cuda --dtype f32 --out /tmp/img-f32 --quiet
$S generate "a red fox in the snow" --model /tmp/sd15 --steps "$STEPS" --seed 3 --device cuda --dtype f16 --out /tmp/img-f16 --quiet
$S generate "a red fox in the snow" --model /tmp/sd15 --steps "$STEPS" --seed 3 --device cuda --dtype bf16 --out /tmp/img-bf16 --quiet
SHOAL_PLAIN_KERNELS=1 $S generate "a red fox in the snow" --model /tmp/sd15 --steps "$STEPS" --seed 3 --device cuda --dtype f16 --out /tmp/img-f16-plain --quiet
for v in f16 bf16 f16-plain; do echo "f32 plain vs $v:"; $S image-diff /tmp/img-f32/*.png /tmp/img-$v/*.png; done 2>&1 | tee "$OUT/images.txt"
