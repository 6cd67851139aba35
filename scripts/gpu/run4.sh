#!/usr/bin/env bash
# GPU call 4 (build cuda,nccl): placement modes on sd15 (one GPU / balanced over 2 / model offload:
# latency, peak memory, same image), SDXL balanced over 4 GPUs, and a mid-job fault run on 4 GPUs.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
gunzip -c .gpu/shoal.gz > /tmp/shoal && chmod +x /tmp/shoal
source .gpu/device-env.sh
S=/tmp/shoal
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
$S generate x --model /tmp/sd15 --steps 1 --height 64 --width 64 --device cuda:0 --dtype f16 --out /tmp/w1 --quiet > /dev/null 2>&1
bench1() { timeout 90 $S bench sd --model /tmp/sd15 --batches 1 --reps 2 "$@" > /tmp/b.txt 2>&1; grep -E "^\| 1|device map|error" /tmp/b.txt; }
echo "== sd15 512², 30 steps, f16, batch 1 (GPUs 0,1 visible)" >> "$B"
export CUDA_VISIBLE_DEVICES=0,1
peak "shoal one-gpu" bench1 --device cuda:0 >> "$B"
peak "shoal balanced 0=3GB,1=3GB" bench1 --device-map balanced --max-memory 0=3GB,1=3GB >> "$B"
peak "shoal model offload" bench1 --device cuda:0 --offload model >> "$B"
G="--model /tmp/sd15 --steps 30 --seed 7 --dtype f16 --quiet"
$S generate "a red fox" $G --device cuda:0 --out /tmp/i-one > /dev/null 2>&1
$S generate "a red fox" $G --device-map balanced --max-memory 0=3GB,1=3GB --out /tmp/i-map 2>&1 | grep -E "device map|error" >> "$B"
$S generate "a red fox" $G --device cuda:0 --offload model --out /tmp/i-off > /dev/null 2>&1
echo "balanced map vs one GPU: $($S image-diff /tmp/i-one/*.png /tmp/i-map/*.png 2>&1)" >> "$B"
echo "model offload vs one GPU: $($S image-diff /tmp/i-one/*.png /tmp/i-off/*.png 2>&1)" >> "$B"
unset CUDA_VISIBLE_DEVICES
cat "$B"
X="$OUT/sdxl.log"; : > "$X"
( time $S make-model --preset sdxl --dtype f16 --out /tmp/sdxl ) >> "$X" 2>&1
$S plan --model /tmp/sdxl --device-map balanced --height 1024 --width 1024 --dtype f16 >> "$X" 2>&1
peak "shoal sdxl balanced over 4 GPUs" timeout 200 $S bench sd --model /tmp/sdxl --height 1024 --width 1024 --steps 30 --batches 1 --reps 1 --device-map balanced >> "$X" 2>&1
cat "$X" | grep -v "^make-model"
F="$OUT/fault.log"; : > "$F"
for i in $(seq 32); do echo "a photo of a red fox number $i"; done > /tmp/prompts.txt
GF="--model /tmp/sd15 --prompts-file /tmp/prompts.txt --steps 30 --dtype f16 --batch-size 2 --out /tmp/fjob --quiet"
t0=$SECONDS
timeout 200 $S launch -n 4 --grace-period 5 $S generate $GF --fail-rank 1 --fail-after 2 > /tmp/fault1.txt 2>&1
echo "killed run: exit $? after $((SECONDS-t0)) s" >> "$F"
grep -E "root cause|failed first" /tmp/fault1.txt >> "$F"
sleep 1; echo "shoal processes left running: $(pgrep -fc '/tmp/shoal generate' || true)" >> "$F"
echo "files after the crash: $(ls /tmp/fjob/*.png | wc -l) of 32; manifest records: $(wc -l < /tmp/fjob/manifest.jsonl)" >> "$F"
sha256sum /tmp/fjob/*.png > /tmp/before.sha
timeout 200 $S launch -n 4 $S generate $GF --resume 2>&1 | grep -E "generate:" >> "$F"
echo "files after resume: $(ls /tmp/fjob/*.png | wc -l) of 32; manifest records: $(wc -l < /tmp/fjob/manifest.jsonl)" >> "$F"
sha256sum -c --quiet /tmp/before.sha && echo "files finished before the crash unchanged: yes" >> "$F" || echo "files finished before the crash unchanged: NO" >> "$F"
cat "$F"
