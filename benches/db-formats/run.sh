#!/bin/bash
# The measurements of benches/NOTES.md, "Redis RDB files and mongodump archives".
# Usage: benches/db-formats/run.sh WORKDIR
# Needs redis-server and redis-tools (Debian), zstd, and from PyPI pymongo, crcmod and
# numpy. dprepo is target/release/dprepo unless $DPREPO names another build (the stored
# bytes do not depend on the build profile).
set -euo pipefail
B=$1
here=$(cd "$(dirname "$0")" && pwd)
bench=$here/../../scripts/bench-db-streams.sh
mkdir -p "$B/redis" "$B/mongo" "$B/work"
sizes=(dprepo:auto:128K:512K:2M dprepo:cdc:128K:512K:2M dprepo:cdc:512:2K:8K
  dprepo:cdc:1K:4K:16K dprepo:cdc:2K:8K:32K dprepo:cdc:8K:32K:128K)

# Redis: 200,000 keys, two BGSAVE dumps around a 1% change, LZF on (default) and off.
"$here/redis-dumps.sh" "$B/redis" 200000
# KubeBlocks' redis addon pushes `tar -cf - ./` of the data directory.
for n in 1 2; do
  rm -rf "$B/redis/t$n" && mkdir -p "$B/redis/t$n"
  cp "$B/redis/lzf-$n.rdb" "$B/redis/t$n/dump.rdb"
  tar -C "$B/redis/t$n" -cf "$B/redis/lzf-$n.tar" ./
done
"$bench" "$B/redis/lzf-1.rdb" "$B/redis/lzf-2.rdb" "$B/work" "${sizes[@]}"
"$bench" "$B/redis/raw-1.rdb" "$B/redis/raw-2.rdb" "$B/work" "${sizes[@]}"
"$bench" "$B/redis/lzf-1.tar" "$B/redis/lzf-2.tar" "$B/work" dprepo:auto:128K:512K:2M

# mongodump --archive (built by mongo-archive.py), plain and gzip'd (as --gzip does).
python3 "$here/mongo-archive.py" "$B/mongo/a1.archive" "$B/mongo/a2.archive"
for n in 1 2; do gzip -1 -c "$B/mongo/a$n.archive" > "$B/mongo/a$n.archive.gz"; done
"$bench" "$B/mongo/a1.archive" "$B/mongo/a2.archive" "$B/work" "${sizes[@]}"
"$bench" "$B/mongo/a1.archive.gz" "$B/mongo/a2.archive.gz" "$B/work" \
  dprepo:auto:128K:512K:2M dprepo:cdc:4K:16K:64K

# What datasafed stores (zstd-fastest of the stream), and what moved between dumps.
for f in "$B"/redis/*-2.rdb "$B"/mongo/a2.archive*; do
  echo "zstd-1 $f $(zstd -1 -T1 -c "$f" | wc -c)"
done
python3 "$here/moved-bytes.py" "$B/redis/lzf-1.rdb" "$B/redis/lzf-2.rdb" \
  "$B/redis/raw-1.rdb" "$B/redis/raw-2.rdb" "$B/mongo/a1.archive" "$B/mongo/a2.archive"
