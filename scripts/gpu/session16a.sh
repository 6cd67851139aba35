#!/usr/bin/env bash
# Session 16, call A (one GPU): session 15's call D — the binary with attn_tma at 4 warpgroups and the
# overlap, taken for f16 at width 40: its bench ops self-attention rows beside PyTorch (call by call,
# then as CUDA graph replays on both sides, `--graphs`), its image and an alternated A/B against
# .gpu/shoal-old.gz (the build of commit aea78e9, where no model path takes the kernel), bf16 rows —
# then which kernel cuDNN runs for shoal and for PyTorch on the rows where shoal's call of cuDNN's SDPA
# measured slower than PyTorch's (ncu, kernel durations; last, as time allows); the attn_tma bench with
# part of the exponentials on the FMA pipe, and ncu's pipe and stall view of attn_tma.
#   bash scripts/gpu/session16a.sh
set -u
source scripts/gpu/common.sh
T0=$(date +%s.%N)
gunzip -c .gpu/shoal-old.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
{
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
echo "== [$(el $T0) s] bench ops, self-attention rows (f16, beside PyTorch), call by call"
$S bench ops --device cuda --dtype f16 --batches 2,16 --only self --iters 50 --peer torch 2>&1 | grep -E "self|fell|^\| op|rror|mean"
echo "== [$(el $T0) s] the same as CUDA graph replays (--graphs)"
$S bench ops --device cuda --dtype f16 --batches 2,16 --only self --iters 50 --graphs --peer torch 2>&1 | grep -E "self|fell|^\| op|rror|mean|graph"
echo "== [$(el $T0) s] attn_tma bench: exponentials on the FMA pipe (ex2_fma), 0-4 of 8 column groups"
.gpu/attn_tma 30
echo "== [$(el $T0) s] images"
images /tmp/shoal-old img --steps 30 --dtype f16
echo "== [$(el $T0) s] bench ops, l0 self-attention (bf16), batch 16"
$S bench ops --device cuda --dtype bf16 --batches 16 --only "l0 self" --iters 10 2>&1 | grep -E "self|fell|^\| op|rror"
echo "== [$(el $T0) s] A/B: old = without attn_tma, new = this call's"
alternate /tmp/shoal-old
echo "== [$(el $T0) s] ncu: attn_tma (4 warpgroups, overlap) at d40 and d64: pipes and stalls"
for skip in 0 48; do
  ncu --clock-control none --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats \
    --section InstructionStats -k regex:tma_k --launch-skip $skip --launch-count 1 .gpu/attn_tma 1 > "$OUT/ncu-tma-$skip.txt" 2>&1
  echo "rc $? (skip $skip)"
  ncu --clock-control none -k regex:tma_k --launch-skip $skip --launch-count 1 --metrics \
sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_issued.avg.pct_of_peak_sustained_active,gpu__time_duration.sum \
    .gpu/attn_tma 1 > "$OUT/ncu-tma-pipes-$skip.txt" 2>&1
  echo "rc $? (pipes, skip $skip)"
done
echo "== [$(el $T0) s] ncu: shoal's cuDNN SDPA, batch 16 (d80 l1, sdxl l2 d64), then PyTorch's"
NCU="ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel"
for o in "sd15 l1 self" "sdxl l2 self"; do
  $NCU $S bench ops --device cuda --dtype f16 --batches 16 --only "$o" --iters 3 > "$OUT/ncu-shoal-${o// /-}.txt" 2>&1
  echo "rc $? ($o)"
done
$NCU python3 scripts/gpu/sdpa_probe.py --calls 3 > "$OUT/ncu-torch.txt" 2>&1; echo "rc $?"
echo "== [$(el $T0) s] ncu: cuDNN's SDPA kernel at SDXL l1 d64, batch 16 (pipes and stalls, as attn_tma's above)"
PIPES=sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_issued.avg.pct_of_peak_sustained_active,gpu__time_duration.sum
ncu --clock-control none --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats \
  --section InstructionStats -k regex:"sdpa|fmha|flash|cudnn" --launch-count 1 \
  $S bench ops --device cuda --dtype f16 --batches 16 --only "sdxl l1 self" --iters 1 > "$OUT/ncu-cudnn-d64.txt" 2>&1
echo "rc $?"
ncu --clock-control none -k regex:"sdpa|fmha|flash|cudnn" --launch-count 1 --metrics $PIPES \
  $S bench ops --device cuda --dtype f16 --batches 16 --only "sdxl l1 self" --iters 1 > "$OUT/ncu-cudnn-d64-pipes.txt" 2>&1
echo "rc $?"
echo "== [$(el $T0) s] done"
} 2>&1 | tee "$OUT/session16a.txt"
