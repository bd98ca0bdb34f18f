#!/bin/sh
# Makes two versions of a PostgreSQL data directory as tar streams, for
# `measure stream OUT/pg-v1.tar OUT/pg-v2.tar --preset db` (see benches/NOTES.md):
# v1 = `pgbench -i -s 50` (5M accounts, ~800 MB), vacuumed and checkpointed;
# v2 = v1 after 2000 pgbench TPC-B transactions. pg_wal is left out (WAL is archived
# separately). The server listens on a Unix socket in OUT only. Run as root.
set -eu
OUT=${1:-/tmp/bench}
BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)}
PGDIR=$OUT/pg
rm -rf "$PGDIR"
mkdir -p "$PGDIR"
chown postgres "$PGDIR"
run() { su postgres -s /bin/sh -c "$*"; }
start="$BIN/pg_ctl -D $PGDIR/data -l $PGDIR/log -w start -o \"-c listen_addresses='' -c unix_socket_directories=$PGDIR\""
stop="$BIN/pg_ctl -D $PGDIR/data -m fast -w stop"
run "$BIN/initdb -D $PGDIR/data --no-sync -U postgres >/dev/null"
run "$start"
run "$BIN/pgbench -h $PGDIR -U postgres -i -s 50 -q postgres"
run "$BIN/psql -h $PGDIR -U postgres -q -c 'VACUUM ANALYZE' -c CHECKPOINT postgres"
run "$stop"
tar --sort=name -cf "$OUT/pg-v1.tar" -C "$PGDIR/data" --exclude=./pg_wal .
run "$start"
run "$BIN/pgbench -h $PGDIR -U postgres -n -t 2000 -c 1 postgres" | grep 'transactions actually'
run "$stop"
tar --sort=name -cf "$OUT/pg-v2.tar" -C "$PGDIR/data" --exclude=./pg_wal .
ls -l "$OUT"/pg-v*.tar
