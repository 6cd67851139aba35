#!/usr/bin/env bash
# The GPU test suite, run on a GPU machine from the repository root after scripts/gpu/build.sh:
#   bash scripts/gpu/test.sh            # needs 2 GPUs for the NCCL steps
# Each step prints PASS or FAIL; the script exits non-zero if any step failed.
set -u
[ -f .gpu/device-env.sh ] && source .gpu/device-env.sh
B=${SHOAL:-.gpu/shoal}
OUT=${OUT:-/tmp/shoal-gpu-test}
mkdir -p "$OUT"
fails=0
step() { local name=$1; shift; echo "== $name"; if "$@"; then echo "PASS $name"; else echo "FAIL $name (exit $?)"; fails=$((fails+1)); fi; }
expect_fail_within() { # seconds cmd...: the command must fail, and within the bound
  local bound=$1; shift; local t0=$SECONDS; "$@"; local rc=$?; local dt=$((SECONDS-t0))
  echo "exit $rc after ${dt}s (bound ${bound}s)"; [ $rc -ne 0 ] && [ $dt -le "$bound" ]
}
no_leftovers() { sleep 1; ! pgrep -f "$B demo" >/dev/null; }

step env "$B" env
step nccl-collectives-2gpu "$B" launch -n 2 "$B" demo --backend nccl
step nccl-collectives-spawn "$B" demo --spawn 2 --backend nccl
step comm-bandwidth "$B" launch -n 2 "$B" bench comm --min-mib 1 --max-mib 1024 --iters 10
step killed-peer-ends-job expect_fail_within 60 "$B" launch -n 2 --grace-period 5 "$B" demo --backend nccl --fail-rank 1 --fail-mode kill-early
step killed-peer-no-leftovers no_leftovers
step hung-peer-watchdog expect_fail_within 90 env SHOAL_TIMEOUT=15 "$B" launch -n 2 --grace-period 5 "$B" demo --backend nccl --fail-rank 1 --fail-mode hang-early
step hung-peer-no-leftovers no_leftovers
# The GPU image against the CPU image, tiny model, same seed and steps.
rm -rf "$OUT/tiny" "$OUT/img"
step make-tiny "$B" make-model --preset tiny --out "$OUT/tiny"
for d in cpu:f32 cuda:f32 cuda:f16 cuda:bf16; do
  dev=${d%%:*}; dt=${d##*:}
  step "generate-$dev-$dt" "$B" generate --model "$OUT/tiny" "a red fox" --steps 20 --seed 1 --device "$dev" --dtype "$dt" --out "$OUT/img/$dev-$dt" --quiet
done
for d in cuda-f32 cuda-f16 cuda-bf16; do
  step "image-$d-vs-cpu" "$B" image-diff "$OUT"/img/cpu-f32/*.png "$OUT"/img/$d/*.png --max 0.1
done
echo "failures: $fails"
exit $fails
