#!/usr/bin/env bash
# GPU call 3: cuDNN A/B (same machine), device map over 2 GPUs and model offload vs one GPU
# (latency, peak memory, same image), diffusers' balanced / model offload / plain side by side.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
gunzip -c .gpu/shoal.gz > /tmp/shoal && chmod +x /tmp/shoal            # cuda,nccl,cudnn
gunzip -c .gpu/shoal-nocudnn.gz > /tmp/shoal0 && chmod +x /tmp/shoal0   # cuda,nccl
source .gpu/device-env.sh
S=/tmp/shoal
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl >/dev/null 2>&1
# peak LABEL CMD...: largest memory.used per GPU while CMD runs, minus the idle value (MiB, includes CUDA contexts).
peak() {
  local label=$1; shift
  nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits > /tmp/base.csv
  nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 100 > /tmp/poll.csv & local p=$!
  "$@"; local rc=$?
  kill $p 2>/dev/null; wait $p 2>/dev/null
  echo "$label peak MiB over idle (exit $rc): $(awk -F', ' 'NR==FNR{b[$1]=$2;next}{if($2-b[$1]>m[$1])m[$1]=$2-b[$1]}END{for(i in m)printf "gpu%s=%d ",i,m[i]}' /tmp/base.csv /tmp/poll.csv)"
}
B="$OUT/modes.log"; : > "$B"
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
# Warm the JIT caches of both binaries.
$S generate x --model /tmp/sd15 --steps 1 --height 64 --width 64 --device cuda:0 --dtype f16 --out /tmp/w1 --quiet > /dev/null 2>&1
/tmp/shoal0 generate x --model /tmp/sd15 --steps 1 --height 64 --width 64 --device cuda:0 --dtype f16 --out /tmp/w2 --quiet > /dev/null 2>&1
echo "== cuDNN A/B, sd15 512², 30 steps, f16, one GPU" >> "$B"
timeout 120 /tmp/shoal0 bench sd --model /tmp/sd15 --batches 1,8 --reps 2 --device cuda:0 2>&1 | grep -E "^\||load" | sed 's/^/no-cudnn /' >> "$B"
timeout 120 $S bench sd --model /tmp/sd15 --batches 1,4,8 --reps 2 --device cuda:0 2>&1 | grep -E "^\||load" | sed 's/^/cudnn /' >> "$B"
echo "== placement modes, batch 1, 30 steps (GPUs 0,1 visible)" >> "$B"
export CUDA_VISIBLE_DEVICES=0,1
bench1() { timeout 90 $S bench sd --model /tmp/sd15 --batches 1 --reps 2 "$@" > /tmp/b.txt 2>&1; grep -E "^\| 1|device map|error" /tmp/b.txt; }
peak "shoal one-gpu" bench1 --device cuda:0 >> "$B"
peak "shoal balanced 0=2GB,1=2GB" bench1 --device-map balanced --max-memory 0=2GB,1=2GB >> "$B"
peak "shoal model offload" bench1 --device cuda:0 --offload model >> "$B"
# Same image: one GPU, balanced map, model offload.
G="--model /tmp/sd15 --steps 30 --seed 7 --dtype f16 --quiet"
$S generate "a red fox" $G --device cuda:0 --out /tmp/i-one > /dev/null 2>&1
$S generate "a red fox" $G --device-map balanced --max-memory 0=2GB,1=2GB --out /tmp/i-map 2>&1 | grep "device map" >> "$B"
$S generate "a red fox" $G --device cuda:0 --offload model --out /tmp/i-off > /dev/null 2>&1
echo "map vs one: $($S image-diff /tmp/i-one/*.png /tmp/i-map/*.png)" >> "$B"
echo "offload vs one: $($S image-diff /tmp/i-one/*.png /tmp/i-off/*.png)" >> "$B"
echo "== diffusers" >> "$B"
dvar() { PYTHONPATH=/tmp/site timeout 200 python3 .gpu/variants_short.py /tmp/sd15 > /tmp/d.txt 2>&1; grep -E "diffusers|hf_device_map|Error" /tmp/d.txt; }
peak "diffusers (all three modes, one process)" dvar >> "$B"
cat "$B"
