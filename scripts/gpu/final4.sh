#!/usr/bin/env bash
# One call: the SD UNet pipeline (2 stages, 2 processes on the one GPU) against one process, and a CLIP
# tokenizer folder as transformers 5 saves it, with its ids for a set of prompts (fixture for issue 13).
#   bash scripts/gpu/final4.sh
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/tok"
gunzip -c .gpu/shoal.gz > /tmp/shoal && chmod +x /tmp/shoal
source .gpu/device-env.sh
S=/tmp/shoal
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
CUDA_VISIBLE_DEVICES= python3 - "$OUT/tok" <<'PY' 2>&1 | grep -v -i warn | tail -3
import json, sys
import transformers
from transformers import AutoTokenizer
out = sys.argv[1]
t = AutoTokenizer.from_pretrained("/tmp/sd15/tokenizer")
saved = t.save_pretrained(out)
prompts = ["a red fox in the snow", "A photo of an astronaut riding a horse on Mars, 4k, trending!!",
           "  spaces   and\ttabs  ", "émigré café naïve 東京 🙂", "don't it's we'll they're I'm",
           "x " * 100, ""]
enc = t(prompts, padding="max_length", max_length=t.model_max_length, truncation=True)
json.dump({"transformers": transformers.__version__, "class": type(t).__name__, "files": sorted(map(str, saved)),
           "model_max_length": t.model_max_length, "prompts": prompts, "input_ids": enc["input_ids"]},
          open(out + "/ids.json", "w"), indent=0)
print(type(t).__name__, sorted(map(str, saved)))
PY
ls -la "$OUT/tok"
P="a red fox in the snow"
$S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --dtype f16 --out /tmp/one --quiet 2>&1 | tail -1
SHOAL_ALLOW_GPU_SHARING=1 $S launch -n 2 -- $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --dtype f16 --out /tmp/pipe --pipeline-parallel 2>&1 | grep -v "^Warning\|^{" | tail -3
$S image-diff /tmp/one/*.png /tmp/pipe/*.png 2>&1 | tee "$OUT/pipe-image.txt"
