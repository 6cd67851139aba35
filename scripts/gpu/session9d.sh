#!/usr/bin/env bash
# Session 9, call D (one H200): a 3×3 convolution over at most 2^18 output elements adds its residual
# after the kernel (nn::fuses_residual). The l3/mid ResNet rows beside PyTorch, the conv checks in
# f16 and bf16, then call C's binary (.gpu/shoal-9c.gz, residual always fused) and this one
# alternated at batches 1 and 8, and the images of both against the f32 plain path.
#   bash scripts/gpu/session9d.sh
set -u
source scripts/gpu/common.sh
gunzip -c .gpu/shoal-9c.gz > /tmp/shoal-9c && chmod +x /tmp/shoal-9c
$S make-model --preset sd15 --dtype f16 --out /tmp/sd15 > /dev/null 2>&1
{
echo "== l3/mid ResNet rows against PyTorch"
$S bench ops --dtype f16 --batches 2,16 --iters 100 --only "l3/mid resnet" --peer torch 2>&1 | grep -E "heads|×|passed|failed"
for d in f16 bf16; do
  echo "== conv ops $d (checks)"
  $S bench ops --dtype $d --batches 2,16 --iters 5 --only conv 2>&1 | grep -E "FAIL|fell|passed|failed|not bit-reproducible" | head
done
for r in 1 2; do
  for b in old new; do
    bin=$S; [ $b = old ] && bin=/tmp/shoal-9c
    echo "== $b, run $r"
    $bin bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 3 2>&1 | grep -E "^\| [18] "
  done
done
SHOAL_PLAIN_KERNELS=1 $S generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype f32 --out /tmp/img-ref --quiet > /dev/null 2>&1
for b in old new; do
  bin=$S; [ $b = old ] && bin=/tmp/shoal-9c
  $bin generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda --dtype f16 --out /tmp/img-$b --quiet > /dev/null 2>&1
  echo "$b f16 vs f32 plain: $($S image-diff /tmp/img-ref/*.png /tmp/img-$b/*.png 2>&1)"
done
echo "new vs old f16: $($S image-diff /tmp/img-old/*.png /tmp/img-new/*.png 2>&1)"
} 2>&1 | tee "$OUT/session9d.txt"
