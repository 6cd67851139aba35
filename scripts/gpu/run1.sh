#!/usr/bin/env bash
# GPU call 1: the GPU test suite (2 GPUs), NCCL bandwidth on all GPUs, SD1.5 bench vs diffusers (1 GPU).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
gunzip -c .gpu/shoal.gz > /tmp/shoal && chmod +x /tmp/shoal
export SHOAL=/tmp/shoal
source .gpu/device-env.sh
{ date -u; nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -c 'import torch, sys; print("torch", torch.__version__, "python", sys.version.split()[0])'; } > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
# Warm the PTX JIT cache once.
timeout 120 /tmp/shoal generate "warm" --model /dev/null 2>/dev/null
/tmp/shoal make-model --preset tiny --out /tmp/warm >/dev/null 2>&1
timeout 120 /tmp/shoal generate --model /tmp/warm "warm" --steps 2 --device cuda:0 --dtype f16 --out /tmp/warm-out --quiet > /dev/null 2>&1
timeout 300 bash scripts/gpu/test.sh > "$OUT/test.log" 2>&1; echo "test.sh exit $?" >> "$OUT/test.log"
grep -E "^(PASS|FAIL|==|exit|image-diff|failures|test.sh)" "$OUT/test.log"
N=$(nvidia-smi -L | wc -l)
timeout 120 /tmp/shoal launch -n "$N" /tmp/shoal bench comm --min-mib 1 --max-mib 1024 --iters 10 > "$OUT/comm$N.log" 2>&1
cat "$OUT/comm$N.log" | tail -8
# SD1.5 architecture, random weights, f16 files shared by both systems.
( time /tmp/shoal make-model --preset sd15 --dtype f16 --out /tmp/sd15 ) > "$OUT/bench.log" 2>&1
timeout 240 /tmp/shoal bench sd --model /tmp/sd15 --steps 30 --batches 1,4,8 --reps 2 --device cuda:0 >> "$OUT/bench.log" 2>&1
echo "== diffusers" >> "$OUT/bench.log"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl >/dev/null 2>&1
PYTHONPATH=/tmp/site timeout 150 python3 .gpu/sd_bench.py /tmp/sd15 30 1,4,8 >> "$OUT/bench.log" 2>&1
tail -25 "$OUT/bench.log"
