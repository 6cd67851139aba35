#!/usr/bin/env bash
# GPU call 6: sequential offload (sd15, batch 1, 512², f16): latency, peak memory, same image; diffusers' sequential offload.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
gunzip -c .gpu/shoal.gz > /tmp/shoal && chmod +x /tmp/shoal
source .gpu/device-env.sh
S=/tmp/shoal
export CUDA_VISIBLE_DEVICES=0
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl >/dev/null 2>&1
peak() {
  local label=$1; shift
  nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits > /tmp/base.csv
  nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 100 > /tmp/poll.csv & local p=$!
  "$@"; local rc=$?
  kill $p 2>/dev/null; wait $p 2>/dev/null
  echo "$label peak MiB over idle (exit $rc): $(awk -F', ' 'NR==FNR{b[$1]=$2;next}{if($2-b[$1]>m[$1])m[$1]=$2-b[$1]}END{for(i in m)printf "gpu%s=%d ",i,m[i]}' /tmp/base.csv /tmp/poll.csv)"
}
L="$OUT/seq.log"; : > "$L"
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
$S generate x --model /tmp/sd15 --steps 1 --height 64 --width 64 --device cuda:0 --dtype f16 --out /tmp/w --quiet > /dev/null 2>&1
b() { timeout 150 $S bench sd --model /tmp/sd15 --batches 1 --reps 1 "$@" > /tmp/b.txt 2>&1; grep -E "^\| 1|error" /tmp/b.txt; }
peak "shoal sequential offload, 30 steps" b --device cuda:0 --offload sequential --steps 30 >> "$L"
peak "shoal sequential offload, 10 steps" b --device cuda:0 --offload sequential --steps 10 >> "$L"
G="--model /tmp/sd15 --steps 30 --seed 7 --dtype f16 --quiet --device cuda:0"
$S generate "a red fox" $G --out /tmp/i-one > /dev/null 2>&1
$S generate "a red fox" $G --offload sequential --out /tmp/i-seq > /dev/null 2>&1
echo "sequential offload vs one GPU: $($S image-diff /tmp/i-one/*.png /tmp/i-seq/*.png 2>&1)" >> "$L"
cat > /tmp/dseq.py <<'PY'
import sys, time, torch
from diffusers import StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_pretrained(sys.argv[1], torch_dtype=torch.float16, safety_checker=None)
pipe.tokenizer.model_max_length = 77; pipe.set_progress_bar_config(disable=True)
pipe.enable_sequential_cpu_offload()
pipe(["a dog"], num_inference_steps=2, height=512, width=512)
torch.cuda.reset_peak_memory_stats(0); torch.cuda.synchronize(); t = time.perf_counter()
pipe(["a dog"], num_inference_steps=10, height=512, width=512, guidance_scale=7.5)
torch.cuda.synchronize()
print(f"diffusers sequential offload b1 10 steps: {time.perf_counter()-t:.3f} s/img; peak GB {torch.cuda.max_memory_allocated(0)/1e9:.2f}", flush=True)
PY
dseq() { PYTHONPATH=/tmp/site timeout 200 python3 /tmp/dseq.py /tmp/sd15 2>&1 | grep -E "diffusers seq|Error"; }
peak "diffusers sequential offload" dseq >> "$L"
cat "$L"
