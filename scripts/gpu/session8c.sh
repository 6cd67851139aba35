#!/usr/bin/env bash
# Session 8, call C (one H200): cuDNN convolutions channels-last with bias + residual, bias alone and
# no bias, with the heuristic's first engine and with the fastest of 16 candidates timed
# (SHOAL_CUDNN_TUNE=16), against PyTorch's same ops (cudnn.benchmark on), 50 iterations.
#   bash scripts/gpu/session8c.sh
set -u
source scripts/gpu/common.sh
{
for t in 0 16; do
  echo "== conv and attention rows, f16, SHOAL_CUDNN_TUNE=$t (table in ops8c-tune$t.md)"
  SHOAL_CUDNN_TUNE=$t $S bench ops --dtype f16 --batches 2,16 --iters 50 --peer torch > "$OUT/ops8c-tune$t.md" 2>&1
  echo "rc $?"; grep -E "geometric|under 0.8|cuDNN engine timing|plans built|FAIL" "$OUT/ops8c-tune$t.md"
done
} 2>&1 | tee "$OUT/session8c.txt"
