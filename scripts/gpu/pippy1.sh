#!/usr/bin/env bash
# One call: GPT-2 parity fixtures from transformers (CPU, f32) on models written by shoal, then shoal pippy on
# one GPU: the seed's GPT2ForSequenceClassification (GPT2Config(), batch 2 × 1024) in one process and in two
# stages on the same GPU (CPU backend between them), logits compared.   bash scripts/gpu/pippy1.sh
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/gpt2"
gunzip -c .gpu/shoal.gz > /tmp/shoal && chmod +x /tmp/shoal
source .gpu/device-env.sh
S=/tmp/shoal
$S make-model --preset tiny-gpt2 --seed 1 --out /tmp/g-lm > /dev/null && $S make-model --preset tiny-gpt2-cls --seed 1 --out /tmp/g-cls > /dev/null
CUDA_VISIBLE_DEVICES= python3 tests/fixtures/gpt2_parity.py /tmp/g-lm /tmp/g-cls "$OUT/gpt2" 2>&1 | grep -v Warning | tail -3
$S make-model --preset gpt2-cls --out /tmp/gpt2-cls 2>&1 | tail -1
echo "== one process, one GPU"
$S pippy --model /tmp/gpt2-cls --batch-size 2 --seq-len 1024 --reps 5 --out /tmp/one.npy 2>&1 | tail -6
$S pippy --model /tmp/gpt2-cls --batch-size 2,8 --num-chunks 1,2,4 --seq-len 1024 --reps 5 --out /tmp/onem.npy 2>&1 | tail -9
echo "== two stages on the same GPU (SHOAL_ALLOW_GPU_SHARING=1)"
SHOAL_ALLOW_GPU_SHARING=1 $S launch -n 2 -- $S pippy --model /tmp/gpt2-cls --batch-size 2 --seq-len 1024 --reps 5 --out /tmp/two.npy 2>&1 | grep -v "^Warning" | tail -9
python3 - <<'PY'
import numpy as np
a, b = np.load("/tmp/one.npy"), np.load("/tmp/two.npy")
print("logits", a.shape, "max |one - two| =", float(np.abs(a - b).max()), "max |one| =", float(np.abs(a).max()))
PY
