#!/usr/bin/env bash
# Last call of session 5 (issue 11): the final binary beside eager diffusers in one call, both timed
# without a memory-polling thread (shoal bench sd; ../shared/gpu/peer/sd_bench.py), then the peak
# memory at batch 8 alone, the same measure for both (shoal bench sd; scripts/gpu/peer_sd.py),
# and the f16 image against the f32 plain one.
#   bash scripts/gpu/session5e.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== shoal, batches 1 and 8"; $S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 5 2>&1 | grep -v "^Warning\|^{"
echo "== diffusers eager (sd_bench.py)"; python3 .gpu/sd_bench.py /tmp/sd15 30 1,8 2>&1 | grep -E "^rank"
echo "== shoal again, batches 1 and 8"; $S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 5 2>&1 | grep -E "^\| [0-9]"
echo "== peak at batch 8: shoal"; $S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 8 --reps 2 2>&1 | grep -E "^\| [0-9]|peak"
echo "== peak at batch 8: diffusers eager (peer_sd.py)"; python3 scripts/gpu/peer_sd.py /tmp/sd15 --steps 30 --batches 8 --reps 2 2>&1 | grep -E "^\| [0-9]|peak"
SHOAL_PLAIN_KERNELS=1 $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype f32 --out /tmp/img-ref --quiet > /dev/null 2>&1
$S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype f16 --out /tmp/img-f16 --quiet > /dev/null 2>&1
echo "f32 plain vs f16 fast:"; $S image-diff /tmp/img-ref/*.png /tmp/img-f16/*.png 2>&1
} 2>&1 | tee "$OUT/session5e.txt"
