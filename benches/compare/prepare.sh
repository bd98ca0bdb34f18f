#!/usr/bin/env bash
# Prepare the data sets of the side-by-side comparison (see BENCHMARKS.md,
# "Side-by-side with restic and borg: current figures"; every run: benches/NOTES.md).
# Idempotent: a data set whose marker exists is left alone; a half-made one is made again.
#
#   benches/compare/prepare.sh [all|src|db|rand]...
#
# Layout under $DPREPO_BENCH_DIR (default /var/tmp/dprepo-bench):
#   src/linux-source-6.1/   /usr/src/linux-source-6.1.tar.xz extracted   marker src/.complete
#   src2/linux-source-6.1/  cp -al of src + mutate.py --seed 1 (breaks the
#                           links of what it changes)                    marker src2/.complete
#   manifests/src.txt, manifests/src2.txt   manifest.py of both linux-source-6.1 trees
#   db/db1.tar, db/db2.tar  pg_basebackup -Ft -D - of a private PostgreSQL 15
#                           after pgbench -i -s 40, and after pgbench -t 5000 -c 4;
#                           db/README says how; reused if present with README
#   rand/rand.bin           1 GiB of AES-256-CTR keystream under a fixed key
#                                                                        marker rand/.complete
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BENCH=${DPREPO_BENCH_DIR:-/var/tmp/dprepo-bench}
LINUX_TAR=${LINUX_TAR:-/usr/src/linux-source-6.1.tar.xz}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_SCALE=${PG_SCALE:-40}
MUTATE_SEED=${MUTATE_SEED:-1}
RAND_BYTES=${RAND_BYTES:-$((1 << 30))}
mkdir -p "$BENCH"
log() { echo "[prepare $(date -u +%H:%M:%S)] $*" >&2; }

prep_src() {
  if [ ! -e "$BENCH/src/.complete" ]; then
    log "extracting $LINUX_TAR into $BENCH/src"
    rm -rf "$BENCH/src.tmp" && mkdir -p "$BENCH/src.tmp"
    tar -xJf "$LINUX_TAR" -C "$BENCH/src.tmp" --no-same-owner
    rm -rf "$BENCH/src" && mv "$BENCH/src.tmp" "$BENCH/src"
    touch "$BENCH/src/.complete"
  fi
  mkdir -p "$BENCH/manifests"
  if [ ! -e "$BENCH/manifests/src.txt" ]; then
    log "manifest of src"
    python3 "$HERE/manifest.py" make "$BENCH/src/linux-source-6.1" "$BENCH/manifests/src.txt" >&2
  fi
  if [ ! -e "$BENCH/src2/.complete" ]; then
    log "src2 = cp -al src + mutate.py --seed $MUTATE_SEED"
    rm -rf "$BENCH/src2.tmp" && mkdir -p "$BENCH/src2.tmp"
    cp -al "$BENCH/src/linux-source-6.1" "$BENCH/src2.tmp/"
    python3 "$HERE/mutate.py" "$BENCH/src2.tmp/linux-source-6.1" --seed "$MUTATE_SEED" \
      | tee "$BENCH/src2.tmp/mutation.txt" >&2
    rm -rf "$BENCH/src2" && mv "$BENCH/src2.tmp" "$BENCH/src2"
    touch "$BENCH/src2/.complete"
  fi
  if [ ! -e "$BENCH/manifests/src2.txt" ]; then
    log "manifest of src2"
    python3 "$HERE/manifest.py" make "$BENCH/src2/linux-source-6.1" "$BENCH/manifests/src2.txt" >&2
  fi
}

prep_rand() {
  [ -e "$BENCH/rand/.complete" ] && return 0
  log "1 GiB of AES-256-CTR keystream into $BENCH/rand/rand.bin"
  mkdir -p "$BENCH/rand"
  rm -f "$BENCH/rand/rand.bin"
  head -c "$RAND_BYTES" /dev/zero | openssl enc -aes-256-ctr -nosalt \
    -K 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f \
    -iv 00000000000000000000000000000000 > "$BENCH/rand/rand.bin"
  [ "$(stat -c %s "$BENCH/rand/rand.bin")" = "$RAND_BYTES" ]
  touch "$BENCH/rand/.complete"
}

prep_db() {
  local db=$BENCH/db
  if [ -s "$db/db1.tar" ] && [ -s "$db/db2.tar" ] && [ -e "$db/README" ]; then
    tar -tf "$db/db1.tar" > /dev/null && tar -tf "$db/db2.tar" > /dev/null && return 0
    log "$db has unreadable tars; making them again"
  fi
  mkdir -p "$db"
  local work
  work=$(mktemp -d /var/tmp/dprepo-bench-pg.XXXXXX)
  chown postgres: "$work"
  local port=${PG_PORT:-54329}
  local as_pg=(runuser -u postgres --)
  stop_pg() { "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$work/data" -m fast stop > /dev/null 2>&1 || true; }
  PG_WORK=$work
  trap 'runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG_WORK/data" -m fast stop >/dev/null 2>&1; rm -rf "$PG_WORK"' EXIT
  log "PostgreSQL 15 in $work (port $port), pgbench -i -s $PG_SCALE"
  "${as_pg[@]}" "$PGBIN/initdb" -D "$work/data" -A trust -U postgres > "$work/initdb.log"
  "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$work/data" -l "$work/server.log" -w \
    -o "-p $port -k $work -c listen_addresses='' -c max_wal_senders=4 -c wal_level=replica" start > /dev/null
  local conn=(-h "$work" -p "$port" -U postgres)
  "${as_pg[@]}" "$PGBIN/pgbench" "${conn[@]}" -i -s "$PG_SCALE" -q postgres > "$work/init.log" 2>&1
  log "pg_basebackup -> db1.tar"
  "${as_pg[@]}" "$PGBIN/pg_basebackup" "${conn[@]}" -Ft -X fetch -c fast -D - > "$db/db1.tar.tmp"
  log "pgbench -t 5000 -c 4"
  "${as_pg[@]}" "$PGBIN/pgbench" "${conn[@]}" -t 5000 -c 4 postgres > "$work/run.log" 2>&1
  log "pg_basebackup -> db2.tar"
  "${as_pg[@]}" "$PGBIN/pg_basebackup" "${conn[@]}" -Ft -X fetch -c fast -D - > "$db/db2.tar.tmp"
  stop_pg
  local tps
  tps=$(tail -n 4 "$work/run.log")
  rm -rf "$work"
  trap - EXIT
  mv "$db/db1.tar.tmp" "$db/db1.tar"
  mv "$db/db2.tar.tmp" "$db/db2.tar"
  cat > "$db/README" <<README
Made by benches/compare/prepare.sh on $(date -u +%Y-%m-%dT%H:%MZ):
PostgreSQL 15 ($PGBIN), initdb -A trust, pgbench -i -s $PG_SCALE;
db1.tar = pg_basebackup -Ft -X fetch -c fast -D - ;
then pgbench -t 5000 -c 4; db2.tar = the same again.
$tps
README
  log "db done: $(ls -l "$db"/db?.tar | awk '{print $5, $9}' | tr '\n' ' ')"
}

[ $# -eq 0 ] && set -- all
for what in "$@"; do
  case $what in
    all) prep_src; prep_rand; prep_db ;;
    src) prep_src ;;
    rand) prep_rand ;;
    db) prep_db ;;
    *) echo "usage: $0 [all|src|db|rand]..." >&2; exit 2 ;;
  esac
done
