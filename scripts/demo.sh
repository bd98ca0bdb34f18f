#!/usr/bin/env bash
# The main job on a fresh machine: build dprepo, create a local repository, back up a
# directory, restore it and check that the restored tree is identical.
# Usage: bash scripts/demo.sh [DIRECTORY]   (default: /usr/share/doc)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
src=$(realpath "${1:-/usr/share/doc}")
work=$(mktemp -d /tmp/dprepo-demo.XXXXXX)
cargo build --release -p dprepo-tools
dprepo=$PWD/target/release/dprepo
export DPREPO_REPOSITORY="$work/repo" DPREPO_PASSWORD="demo password"
"$dprepo" init
"$dprepo" backup "$src"
"$dprepo" backup "$src"          # incremental: unchanged files are not read again
"$dprepo" snapshots
"$dprepo" stats
"$dprepo" restore latest --target "$work/restore"
diff -r --no-dereference "$src" "$work/restore$src" && echo "restored tree is identical to $src"
echo "repository: $work/repo (password: demo password)"
