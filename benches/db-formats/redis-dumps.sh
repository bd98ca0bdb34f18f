#!/bin/bash
# Two Redis RDB dumps from a real redis-server (Debian's redis-server package), before and
# after a 1% change of keys, with RDB compression (LZF, Redis' default) on and off.
# Usage: benches/db-formats/redis-dumps.sh OUTDIR [KEYS] [PORT]
# Writes OUTDIR/{lzf,raw}-{1,2}.rdb (BGSAVE, as KubeBlocks' redis addon takes it) and
# OUTDIR/cli-{1,2}.rdb (`redis-cli --rdb`, LZF on), and prints their sizes.
set -euo pipefail
out=$1 keys=${2:-200000} port=${3:-6424}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/data"
out=$(cd "$out" && pwd)
redis-server --port "$port" --bind 127.0.0.1 --dir "$out/data" --dbfilename dump.rdb \
  --save '' --appendonly no --daemonize yes --pidfile "$out/redis.pid" --logfile "$out/redis.log"
cli() { redis-cli -p "$port" "$@"; }
for _ in $(seq 50); do cli ping > /dev/null 2>&1 && break; sleep 0.1; done
trap 'cli shutdown nosave > /dev/null 2>&1 || true' EXIT
bgsave() { # compression, destination
  cli config set rdbcompression "$1" > /dev/null
  local last; last=$(cli lastsave)
  cli bgsave > /dev/null
  while [ "$(cli lastsave)" = "$last" ]; do sleep 0.2; done
  while cli info persistence | grep -q 'rdb_bgsave_in_progress:1'; do sleep 0.2; done
  cp "$out/data/dump.rdb" "$2"
}
cli flushall > /dev/null
python3 "$here/redis-load.py" fill "$keys" 1 | cli --pipe > /dev/null
sleep 1 # lastsave has a one-second resolution
bgsave yes "$out/lzf-1.rdb"; sleep 1
bgsave no "$out/raw-1.rdb"
cli config set rdbcompression yes > /dev/null
cli --rdb "$out/cli-1.rdb" > /dev/null 2>&1
python3 "$here/redis-load.py" change "$keys" 2 1 | cli --pipe > /dev/null
sleep 1
bgsave yes "$out/lzf-2.rdb"; sleep 1
bgsave no "$out/raw-2.rdb"
cli config set rdbcompression yes > /dev/null
cli --rdb "$out/cli-2.rdb" > /dev/null 2>&1
cli dbsize
ls -l "$out"/*.rdb
