# Sourced by the session scripts of scripts/gpu/: the binary from .gpu/shoal.gz as $S, the run-time
# environment, $OUT, `el T0` (seconds since T0) and `first LABEL CACHE [ENV...]` (the wall time of a
# new process to its first image, sd15 in /tmp/sd15, with CUDA_CACHE_PATH=CACHE; its -v log in
# $OUT/first-LABEL.log, the lines that say where the time went printed under it), `alternate OLD`
# (OLD against $S at batches 1 and 8, A B A B, `bench sd --reps 3` rows) and `images OLD TAG FLAGS...`
# (the sd15 image of seed 3 by each binary with `generate FLAGS`, in /tmp/TAG-{old,new}, compared).
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
gunzip -c .gpu/shoal.gz > /tmp/shoal && chmod +x /tmp/shoal
source .gpu/device-env.sh
S=/tmp/shoal
P="a red fox in the snow"
el() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }
first() {
  local label=$1 cache=$2; shift 2
  local t=$(date +%s.%N)
  env CUDA_CACHE_PATH="$cache" "$@" $S -v generate "$P" --model /tmp/sd15 --steps 30 --seed 3 --device cuda \
    --dtype f16 --out "/tmp/first-$label" --quiet > "$OUT/first-$label.log" 2>&1
  local rc=$?
  echo "first image, $label: $(el "$t") s (rc $rc)"
  grep -E "loaded|identity|kernel modules|cuDNN|CUDA graph|generate:|fell back" "$OUT/first-$label.log" | sed 's/^/    /'
}
alternate() {
  local old=$1 r b bin
  for r in 1 2; do
    for b in old new; do
      bin=$S; [ $b = old ] && bin=$old
      echo "-- $b, run $r"
      $bin bench sd --model /tmp/sd15 --device cuda --steps 30 --batches 1,8 --reps 3 2>&1 | grep -E "^\| [0-9]"
    done
  done
}
images() {
  local old=$1 tag=$2 b bin; shift 2
  for b in old new; do
    bin=$S; [ $b = old ] && bin=$old
    $bin generate "$P" --model /tmp/sd15 --seed 3 --device cuda "$@" --out /tmp/$tag-$b --quiet > /dev/null 2>&1 || echo "$b $tag: rc $?"
  done
  echo "new vs old, $tag: $($S image-diff /tmp/$tag-old/*.png /tmp/$tag-new/*.png 2>&1)"
}
