#!/usr/bin/env bash
# Session 16, call A (one GPU): session 15's call D (the binary with attn_tma at 4 warpgroups and the
# overlap, taken for f16 at width 40: its bench ops self-attention rows beside PyTorch, its image and
# an alternated A/B against .gpu/shoal-old.gz, the build of commit aea78e9 where no model path takes
# the kernel; bf16 rows), then which kernel cuDNN runs for shoal and for PyTorch on the rows where
# shoal's call of cuDNN's SDPA measured slower than PyTorch's (ncu, one pass, kernel durations).
#   bash scripts/gpu/session16a.sh
set -u
T0=$(date +%s.%N)
bash scripts/gpu/session15d.sh
source scripts/gpu/common.sh
{
echo "== [$(el $T0) s] ncu: shoal's cuDNN SDPA, batch 16 (d80 l1, sdxl l2 d64)"
NCU="ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel"
for o in "sd15 l1 self" "sdxl l2 self"; do
  $NCU $S bench ops --device cuda --dtype f16 --batches 16 --only "$o" --iters 3 > "$OUT/ncu-shoal-${o// /-}.txt" 2>&1
  echo "rc $? ($o)"
done
echo "== [$(el $T0) s] ncu: PyTorch's cuDNN SDPA on the same shapes"
$NCU python3 scripts/gpu/sdpa_probe.py --calls 3 > "$OUT/ncu-torch.txt" 2>&1; echo "rc $?"
echo "== [$(el $T0) s] PyTorch's cuDNN SDPA timed (CUDA events), then shoal's rows"
python3 scripts/gpu/sdpa_probe.py --calls 3 --iters 50
$S bench ops --device cuda --dtype f16 --batches 16 --only "l2 self d64" --iters 50 2>&1 | grep -E "self"
$S bench ops --device cuda --dtype f16 --batches 16 --only "l1 self d80" --iters 50 2>&1 | grep -E "self"
echo "== [$(el $T0) s] cudnn-frontend logs (plan tags)"
CUDNN_FRONTEND_LOG_INFO=1 CUDNN_FRONTEND_LOG_FILE=$OUT/fe-shoal.log $S bench ops --device cuda --dtype f16 --batches 16 --only "l1 self d80" --iters 2 > /dev/null 2>&1
CUDNN_FRONTEND_LOG_INFO=1 CUDNN_FRONTEND_LOG_FILE=$OUT/fe-torch.log python3 scripts/gpu/sdpa_probe.py --calls 1 > /dev/null 2>&1
ls -la $OUT
echo "== [$(el $T0) s] done"
} 2>&1 | tee "$OUT/session16a.txt"
