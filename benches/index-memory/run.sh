#!/usr/bin/env bash
# Peak memory of dprepo commands as a repository grows to 10 million blobs
# (BENCHMARKS.md, "Index memory"). For each size N it grows one local repository to N
# blobs (repo-format's grow_repository example: unique 64-byte blobs stored through the
# backup saver), then measures, with /usr/bin/time:
#   open-cold   `dprepo snapshots` with an empty cache directory (index cache built from
#               every index file in the repository)
#   open-warm   the same again (cache up to date)
#   backup-new  `dprepo backup` of 256 MiB of new data (every chunk looked up, all misses)
#   backup-same `dprepo backup --force` of the same data (every chunk looked up, all hits)
#   backup-tree `dprepo backup` of a new tree: 2,000 files of 64 KiB random in 20 dirs
#   backup-incr the same tree again after 2% of its files (40) got new contents: a parent
#               exists, a small part changed (issue 26, point 4)
#   verify      `dprepo verify` (structure, no --read-data), warm cache
# Usage: bash benches/index-memory/run.sh [SIZES...]   (default: 0 1000000 3000000 10000000)
# Env: WORK (default /var/tmp/dprepo-bench/index-memory), DPREPO_BIN, GROW_BIN.
set -euo pipefail
cd "$(dirname "$0")/../.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(0 1000000 3000000 10000000)
work=${WORK:-/var/tmp/dprepo-bench/index-memory}
# Optimised binaries of the static profile (release optimisation without LTO; it links
# the system RocksDB, so it builds in minutes): dprepo and the grow_repository example.
static=${CARGO_TARGET_DIR:-$PWD/target}/$(rustc -vV | sed -n 's/^host: //p')/static
if [ -z "${DPREPO_BIN:-}" ] || [ -z "${GROW_BIN:-}" ]; then
    bash scripts/build-static.sh -p dprepo-repo-format --example grow_repository > /dev/null
fi
dprepo=${DPREPO_BIN:-$static/dprepo}
grow=${GROW_BIN:-$static/examples/grow_repository}
mkdir -p "$work"
repo=$work/repo
printf 'index memory benchmark\n' > "$work/password"
export DPREPO_REPOSITORY=$repo DPREPO_PASSWORD_FILE=$work/password
results=$work/results.tsv
printf 'blobs\tphase\twall_s\tcpu_s\tpeak_rss_kib\n' > "$results"

measure() { # phase, command...
    local phase=$1; shift
    if ! /usr/bin/time -f 'TIME %e %U %S %M' "$@" > /dev/null 2> "$work/last.err"; then
        cat "$work/last.err" >&2; echo "$phase failed" >&2; exit 1
    fi
    local line
    line=$(grep '^TIME ' "$work/last.err" | tail -1)
    read -r _ wall user sys rss <<< "$line"
    printf '%s\t%s\t%s\t%s\t%s\n' "$blobs" "$phase" "$wall" "$(echo "$user + $sys" | bc)" "$rss" | tee -a "$results"
}

make_data() { # dir, seed: 256 MiB in 64 files of new random bytes
    rm -rf "$1"; mkdir -p "$1"
    python3 - "$1" "$2" <<'PY'
import random, sys
d, seed = sys.argv[1], int(sys.argv[2])
r = random.Random(seed)
for i in range(64):
    with open(f"{d}/f{i:02}", "wb") as f:
        f.write(r.randbytes(4 << 20))
PY
}

make_tree() { # dir, seed: 2,000 files of 64 KiB of new random bytes in 20 directories
    rm -rf "$1"; mkdir -p "$1"
    python3 - "$1" "$2" <<'PY'
import os, random, sys
d, seed = sys.argv[1], int(sys.argv[2])
r = random.Random(seed)
for i in range(20):
    os.mkdir(f"{d}/d{i:02}")
    for j in range(100):
        with open(f"{d}/d{i:02}/f{j:03}", "wb") as f:
            f.write(r.randbytes(64 << 10))
PY
}

change_tree() { # dir, seed: new contents for 2% of the files (every 50th)
    python3 - "$1" "$2" <<'PY'
import random, sys
d, seed = sys.argv[1], int(sys.argv[2])
r = random.Random(seed)
for n in range(0, 2000, 50):
    with open(f"{d}/d{n // 100:02}/f{n % 100:03}", "wb") as f:
        f.write(r.randbytes(64 << 10))
PY
}

for blobs in "${sizes[@]}"; do
    "$grow" "$repo" "$work/password" "$blobs" 2>&1 | tail -1
    rm -rf "$work/cache"
    export DPREPO_CACHE_DIR=$work/cache
    measure open-cold "$dprepo" snapshots
    measure open-warm "$dprepo" snapshots
    make_data "$work/data" "$blobs"
    measure backup-new "$dprepo" backup "$work/data"
    measure backup-same "$dprepo" backup --force "$work/data"
    # A tree of its own per size, so the first backup of it has no parent.
    tree=$work/tree-$blobs
    make_tree "$tree" "$((blobs + 1))"
    measure backup-tree "$dprepo" backup "$tree"
    change_tree "$tree" "$((blobs + 2))"
    measure backup-incr "$dprepo" backup "$tree"
    rm -rf "$tree"
    measure verify "$dprepo" verify
done
echo "results: $results"
