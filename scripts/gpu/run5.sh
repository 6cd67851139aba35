#!/usr/bin/env bash
# GPU call 5: shoal generate vs diffusers + accelerate launch on the same 32-prompt split, 1/2/4 GPUs.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
gunzip -c .gpu/shoal.gz > /tmp/shoal && chmod +x /tmp/shoal
source .gpu/device-env.sh
S=/tmp/shoal
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl >/dev/null 2>&1
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
for i in $(seq 32); do echo "a photo of a red fox number $i"; done > /tmp/prompts.txt
L="$OUT/split.log"; : > "$L"
$S generate x --model /tmp/sd15 --steps 1 --height 64 --width 64 --device cuda:0 --dtype f16 --out /tmp/w --quiet > /dev/null 2>&1
for n in 1 2 4; do
  rm -rf /tmp/job
  timeout 150 $S launch -n $n $S generate --model /tmp/sd15 --prompts-file /tmp/prompts.txt --steps 30 --dtype f16 \
    --batch-size 4 --out /tmp/job --quiet 2>&1 | grep "generate:" | sed "s/^/shoal /" >> "$L"
  PYTHONPATH=/tmp/site timeout 150 accelerate launch --num_processes $n --num_machines 1 --mixed_precision no \
    --dynamo_backend no --multi_gpu .gpu/accel_split.py /tmp/sd15 32 2>&1 | grep "diffusers+accelerate" >> "$L" || \
  PYTHONPATH=/tmp/site timeout 150 accelerate launch --num_processes $n .gpu/accel_split.py /tmp/sd15 32 2>&1 | grep -E "diffusers\+accelerate|Error" >> "$L"
done
cat "$L"
