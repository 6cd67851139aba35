#!/usr/bin/env bash
# Session 9, call C (one H200): issue 11's correctness points again on the session's binary (the
# f16 and bf16 fast-path images of sd15 against the f32 plain-path image; the tiny presets on the
# GPU against the CPU), the whole op table against PyTorch (now with the batch-16 attention rows
# over 2^31 scores) in f16, the bf16 checks, model offload beside diffusers, and the first image of
# a new process on an empty driver cache.
#   bash scripts/gpu/session9c.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== first image, new process"
first empty-cache /tmp/cc-empty
echo "== sd15 images, 30 steps, seed 3: the f32 plain path against each"
SHOAL_PLAIN_KERNELS=1 $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype f32 --out /tmp/img-ref --quiet > /dev/null 2>&1 || echo "f32 plain: rc $?"
SHOAL_PLAIN_KERNELS=1 $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype f16 --out /tmp/img-plain-f16 --quiet > /dev/null 2>&1 || echo "f16 plain: rc $?"
$S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype bf16 --out /tmp/img-bf16 --quiet > /dev/null 2>&1 || echo "bf16: rc $?"
echo "fast f16: $($S image-diff /tmp/img-ref/*.png /tmp/first-empty-cache/*.png 2>&1)"
echo "fast bf16: $($S image-diff /tmp/img-ref/*.png /tmp/img-bf16/*.png 2>&1)"
echo "plain f16: $($S image-diff /tmp/img-ref/*.png /tmp/img-plain-f16/*.png 2>&1)"
echo "== tiny presets, GPU against CPU"
bash scripts/gpu/tiny.sh 2>&1
echo "== ops f16 against PyTorch (table in ops9c-f16.md)"
$S bench ops --dtype f16 --batches 2,16 --iters 50 --peer torch > "$OUT/ops9c-f16.md" 2>&1
echo "rc $?"; grep -E "geometric|under 0.8|rows apart|FAIL|failed|passed" "$OUT/ops9c-f16.md"
sed -n '/^ops_peer.py:/,$p' "$OUT/ops9c-f16.md" | grep "×" | grep -v "not run by" \
  | awk -F'|' '{r=$7; gsub(/[ ×]/,"",r); if (r+0 < 1.0) print "under 1x: " $0}'
echo "== ops bf16 (checks)"
$S bench ops --dtype bf16 --batches 2,16 --iters 5 2>&1 | grep -E "FAIL|fell|passed|failed|not bit-reproducible" | head
echo "== model offload, 10 steps, batch 1, beside diffusers"
$S bench sd --model /tmp/sd15 --device cuda --steps 10 --batches 1 --reps 2 --offload model --peer diffusers 2>&1 | grep -E "^\||peak"
} 2>&1 | tee "$OUT/session9c.txt"
