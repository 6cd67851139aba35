#!/usr/bin/env bash
# Session 5's side-by-side table from one command (issue 11, item 7): `shoal bench sd --peer
# diffusers` on sd15 at batches 1, 4, 8, 16, then `--peer diffusers-compiled` at 1 and 8 (the first
# call per batch size holds torch.compile's compilation).
#   bash scripts/gpu/session5f.sh
set -u
source scripts/gpu/common.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== eager"
$S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,4,8,16 --reps 3 --peer diffusers 2>&1 | grep -v "^Warning\|^{"
echo "== compiled"
timeout 260 $S bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 2 --peer diffusers-compiled 2>&1 | grep -v "^Warning\|^{"
} 2>&1 | tee "$OUT/session5f.txt"
