#!/usr/bin/env bash
# The gate (README.md "Run the tests"): the cheapest checks first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# `cargo test` runs the unit, integration and doc tests of every crate.
cargo test --workspace --locked
# The seed's programs, run as a user would (issue 5): under `shoal launch` and with `spawn`.
cargo build --locked --examples --bin shoal
root=$(pwd)
bin=${CARGO_TARGET_DIR:-$root/target}/debug
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(
  cd "$tmp"
  "$bin/shoal" launch --num-processes 2 "$bin/examples/seed_distributed"
  test -s result_0.png && test -s result_1.png
  "$bin/examples/seed_spawn"
  test -s a-dog.png && test -s a-cat.png
  "$bin/shoal" launch --num-processes 2 "$bin/examples/seed_pippy" > pippy.txt
  grep -q "Tensor\[" pippy.txt
)
echo "check.sh: all checks passed"
