#!/usr/bin/env bash
# The house rules the README asks of every change, enforced: formatting, clippy with
# warnings as errors on every target, no dependency cycle between top-level modules, and
# documentation without warnings (broken or private intra-doc links). scripts/test.sh
# runs this before the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo fmt --all --check
# No dependency cycle between top-level modules of the engine or the CLI (issue 27).
python3 scripts/module-cycles.py
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
