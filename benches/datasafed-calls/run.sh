#!/usr/bin/env bash
# datasafed calls with an access key (BENCHMARKS.md, "datasafed calls with an access
# key"): a small push with a password and with an access key, then list -r, stat and
# push over a WAL archive of 100,000 files, with a warm cache directory and with a fresh
# (empty) one each call, as every call of a Kubernetes pod has. Prints wall time, CPU
# time and peak RSS of each call (GNU time), and the catalogue objects
# (`catalog/`). Before the archive is made, PUSHES (default 300) small pushes leave one
# index file each, as WAL archiving does until gc compacts them; the fresh calls print
# their storage requests (DPREPO_DATASAFED_REQUESTS=1). Run from the repository root:
#   bash benches/datasafed-calls/run.sh [WORKDIR] [FILES]
# PROFILE=release measures the release binaries (the example that writes the archive is
# built in the dev profile either way); BIN_DIR=DIR measures the binaries already in DIR
# (e.g. the static build of scripts/build-static.sh, which the images ship).
set -euo pipefail
W=${1:-/var/tmp/dprepo-bench/datasafed-calls}
N=${2:-100000}
PUSHES=${PUSHES:-300}
PROFILE=${PROFILE:-debug}
if [ -n "${BIN_DIR:-}" ]; then
    B=$(cd "$BIN_DIR" && pwd)
elif [ "$PROFILE" = release ]; then
    cargo build -q --release -p dprepo-tools --bins
    B=$PWD/target/release
else
    cargo build -q -p dprepo-tools --bins
    B=$PWD/target/debug
fi
cargo build -q -p dprepo-repo-format --example many_datasafed_files
EXAMPLES=$PWD/target/debug/examples
rm -rf "$W"
mkdir -p "$W/repo"
export DPREPO_CACHE_DIR=$W/cache DATASAFED_LOCAL_BACKEND_PATH=$W/repo
t() {
    local what=$1
    shift
    /usr/bin/time -f "$what: %e s wall, %U s user, %S s sys, %M KiB peak RSS" "$@" > /dev/null
}
echo first | DPREPO_PASSWORD=bench "$B/datasafed" push - /wal/first
DPREPO_PASSWORD=bench "$B/dprepo" -r "$W/repo" key add-access -q --label bench -o "$W/ak"
head -c 6 /dev/urandom > "$W/small"
for i in 1 2 3; do
    DPREPO_PASSWORD=bench t "push 6 B, password" "$B/datasafed" push "$W/small" "/wal/pw$i"
done
export DPREPO_ACCESS_KEY_FILE=$W/ak
for i in 1 2 3; do
    t "push 6 B, access key" "$B/datasafed" push "$W/small" "/wal/ak$i"
done
for i in $(seq 1 "$PUSHES"); do
    head -c 3000 /dev/urandom | "$B/datasafed" push - "/wal/segment$i"
done
echo "index files: $(ls "$W/repo/index" | wc -l)"
"$EXAMPLES/many_datasafed_files" "$W/repo" "$N"
# The archive was written without datasafed: no catalogue object covers it yet.
# A fresh cache directory for every call: `fresh t WHAT COMMAND...`.
fresh() {
    rm -rf "$W/fresh"
    DPREPO_CACHE_DIR=$W/fresh "$@"
}
fresh t "list -r / over $N files, fresh cache, no catalogue (reads every manifest, records the catalogue)" "$B/datasafed" list -r /
echo "catalogue objects: $(ls "$W/repo/catalog" | wc -l), $(du -sh "$W/repo/catalog" | cut -f1)"
for i in 1 2 3; do
    fresh t "list -r / over $N files, fresh cache" "$B/datasafed" list -r /
done
for i in 1 2 3; do
    fresh t "stat / over $N files, fresh cache" "$B/datasafed" stat /
done
for i in 1 2 3; do
    fresh t "push 6 B, access key, $N files, fresh cache" "$B/datasafed" push "$W/small" "/wal/fresh$i"
done
for i in 1 2 3; do
    t "list -r / over $N files" "$B/datasafed" list -r /
done
for i in 1 2 3; do
    t "stat / over $N files" "$B/datasafed" stat /
done
for i in 1 2 3; do
    t "push 6 B, access key, $N files" "$B/datasafed" push "$W/small" "/wal/big$i"
done
echo "catalogue objects: $(ls "$W/repo/catalog" | wc -l)"
DPREPO_DATASAFED_REQUESTS=1 fresh "$B/datasafed" stat / > /dev/null
DPREPO_DATASAFED_REQUESTS=1 fresh "$B/datasafed" list -r / > /dev/null
echo x | DPREPO_DATASAFED_REQUESTS=1 fresh "$B/datasafed" push - /wal/requests
DPREPO_DATASAFED_REQUESTS=1 fresh "$B/datasafed" pull /wal/segment7 - > /dev/null
for i in 1 2 3; do
    fresh t "pull 3,000 B, $N files, fresh cache" "$B/datasafed" pull /wal/segment7 -
done
