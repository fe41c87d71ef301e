#!/usr/bin/env bash
# The whole test suite: dependencies, formatting, lints, every test.
# This is the command the README gives and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --all-targets --locked --no-fail-fast
# --all-targets leaves doctests out (cargo's rule): run them too, so the
# crate docs' quick starts (floodwall-tower's) are tested.
echo "== cargo test --doc"
cargo test --workspace --doc --locked --no-fail-fast
