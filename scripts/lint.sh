#!/usr/bin/env bash
# The house rules the README asks of every change, enforced: formatting, clippy with
# warnings as errors on every target, and documentation without warnings (broken or
# private intra-doc links). scripts/test.sh runs this before the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
