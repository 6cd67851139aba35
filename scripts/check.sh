#!/usr/bin/env bash
# The gate (README.md "Run the tests"): the cheapest checks first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# `cargo test` runs the unit, integration and doc tests of every crate.
cargo test --workspace --locked
