#!/usr/bin/env bash
# GPU call 2: data-parallel scaling of shoal generate (sd15, 512², 30 steps, f16) on 1/2/4 GPUs,
# diffusers + torchrun on the same split, and a fault run (kill 1 of 4 mid-job, then --resume).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
[ -x /tmp/shoal ] || { gunzip -c .gpu/shoal.gz > /tmp/shoal && chmod +x /tmp/shoal; }
source .gpu/device-env.sh
S=/tmp/shoal
[ -d /tmp/sd15 ] || $S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl >/dev/null 2>&1
for i in $(seq 16); do echo "a photo of a red fox number $i"; done > /tmp/prompts.txt
L="$OUT/scaling.log"; : > "$L"
run() { # label n schedule
  rm -rf /tmp/job; local t0=$(date +%s.%N)
  timeout 200 $S launch -n "$2" $S generate --model /tmp/sd15 --prompts-file /tmp/prompts.txt --steps 30 --guidance 7.5 \
    --dtype f16 --batch-size 4 --schedule "$3" --out /tmp/job --quiet 2>&1 | grep -E "generate:|error" | tail -2 >> "$L"
  echo "$1: n=$2 schedule=$3 wall $(echo "$(date +%s.%N) - $t0" | bc) s (launch to exit)" >> "$L"
  ls /tmp/job/*.png | wc -l >> "$L"
}
run shoal-1gpu 1 static
run shoal-2gpu 2 static
run shoal-4gpu 4 static
run shoal-2gpu-dyn 2 dynamic
run shoal-4gpu-dyn 4 dynamic
echo "== diffusers + torchrun, batch 4 per process" >> "$L"
for n in 1 2 4; do
  PYTHONPATH=/tmp/site timeout 150 torchrun --nproc_per_node=$n .gpu/sd_bench.py /tmp/sd15 30 4 2>&1 | grep -E "^rank" >> "$L"
done
cat "$L"
# Fault run: 4 processes, rank 1 dies after 4 images; the job must end, leave nothing, and resume.
F="$OUT/fault.log"; : > "$F"
rm -rf /tmp/fjob; t0=$(date +%s.%N)
timeout 200 $S launch -n 4 --grace-period 5 $S generate --model /tmp/sd15 --prompts-file /tmp/prompts.txt --steps 30 \
  --dtype f16 --batch-size 4 --out /tmp/fjob --quiet --fail-rank 1 --fail-after 4 > /tmp/fault1.txt 2>&1
echo "killed run exit $? after $(echo "$(date +%s.%N) - $t0" | bc) s" >> "$F"
grep -E "root cause|failed|stopped" /tmp/fault1.txt >> "$F"
sleep 1; echo "left running: $(pgrep -fc '/tmp/shoal generate' || true)" >> "$F"
echo "files after crash: $(ls /tmp/fjob/*.png | wc -l)" >> "$F"
sha256sum /tmp/fjob/*.png > /tmp/before.sha
timeout 200 $S launch -n 4 $S generate --model /tmp/sd15 --prompts-file /tmp/prompts.txt --steps 30 \
  --dtype f16 --batch-size 4 --out /tmp/fjob --quiet --resume 2>&1 | grep -E "generate:" >> "$F"
echo "files after resume: $(ls /tmp/fjob/*.png | wc -l); manifest lines $(wc -l < /tmp/fjob/manifest.jsonl)" >> "$F"
sha256sum -c /tmp/before.sha > /dev/null && echo "finished files unchanged: yes" >> "$F" || echo "finished files unchanged: NO" >> "$F"
cat "$F"
