#!/usr/bin/env bash
# One GPU call: the per-op table against PyTorch (same call), the image check, SDXL 1024² and the offload modes
# side by side with diffusers. Logs under $OUT.   bash scripts/gpu/final.sh
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
gunzip -c .gpu/shoal.gz > /tmp/shoal && chmod +x /tmp/shoal
source .gpu/device-env.sh
S=/tmp/shoal
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/gpu.txt"
echo "== ops"; $S bench ops --dtype f16 --peer torch > "$OUT/ops-f16.md" 2>&1
$S bench ops --dtype f32 --batches 2 --iters 3 2>&1 | grep -E "FAIL|fell|passed|failed|error" > "$OUT/ops-f32.txt"
cat "$OUT/ops-f32.txt"
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
echo "== images"
SHOAL_PLAIN_KERNELS=1 $S generate "a red fox in the snow" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype f32 --out /tmp/img-ref --quiet
for d in f32 f16 bf16; do $S generate "a red fox in the snow" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype $d --out /tmp/img-$d --quiet; done
for v in f32 f16 bf16; do echo "f32 plain vs $v fast:"; $S image-diff /tmp/img-ref/*.png /tmp/img-$v/*.png; done > "$OUT/images.txt" 2>&1
cat "$OUT/images.txt"
echo "== offload (sd15, batch 1, 10 steps)"
{ for m in model sequential; do
    $S bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 1 --reps 1 --offload $m 2>&1 | grep -E "^\| 1|peak|error"
    python3 scripts/gpu/peer_sd.py /tmp/sd15 --steps 10 --batches 1 --reps 1 --offload $m 2>&1 | grep -E "^\| 1|peak|peer_sd|Error"
  done; } > "$OUT/offload.txt"
cat "$OUT/offload.txt"
echo "== sdxl 1024²"
t=$SECONDS; $S make-model --preset sdxl --dtype f16 --out /tmp/sdxl > /dev/null 2>&1; echo "make-model sdxl: $((SECONDS-t)) s"
{ $S bench sd --model /tmp/sdxl --device cuda --steps 30 --height 1024 --width 1024 --batches 1,4 --reps 2 2>&1
  python3 scripts/gpu/peer_sd.py /tmp/sdxl --size 1024 --steps 30 --batches 1,4 --reps 2 2>&1 | grep -vi "warn\|deprecat\|Loading"; } > "$OUT/sdxl.txt"
cat "$OUT/sdxl.txt"
