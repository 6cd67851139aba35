#!/usr/bin/env bash
# Session 10, call C (one H200): the channels-last GroupNorm's time kernel by kernel (and two
# candidate variants) on every shape the models run, from crates/shoal-kernels/bench/gn_nhwc.cu
# built here as .gpu/gn_nhwc (nvcc -O3 -arch=sm_90 -std=c++17 -cudart static); then the one-launch
# GroupNorm where nn::group_norm_one_pass says (the UNet's 8² level) against the binary before it
# (.gpu/shoal-6f87edf.gz), alternated at batches 1 and 8, the image of each, the tiny presets on
# the GPU against the CPU, and the GroupNorm rows of bench ops in f16 and bf16.
# (It ran with the loops of common.sh's `alternate` and `images` written inline: the same commands;
# its log labels the image comparisons by what they compare.)
#   bash scripts/gpu/session10c.sh
set -u
source scripts/gpu/common.sh
gunzip -c .gpu/shoal-6f87edf.gz > /tmp/shoal-old && chmod +x /tmp/shoal-old
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== GroupNorm (channels-last, f16) kernel by kernel"
.gpu/gn_nhwc 200
echo "== A/B: old = 6f87edf, new = one launch at 8²"
alternate /tmp/shoal-old
images /tmp/shoal-old img --steps 30 --dtype f16
echo "== tiny presets, GPU against CPU"
bash scripts/gpu/tiny.sh 2>&1
for d in f16 bf16; do
  echo "== bench ops group_norm $d"
  $S bench ops --dtype $d --batches 2,16 --iters 100 --only group_norm --peer torch 2>&1 \
    | grep -E "nhwc|FAIL|passed|failed|not bit-reproducible|geometric"
done
} 2>&1 | tee "$OUT/session10c.txt"
