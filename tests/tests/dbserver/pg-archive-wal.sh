#!/bin/sh
# PostgreSQL archive_command of the database end-to-end tests:
#   archive_command = 'pg-archive-wal %p %f'
# Pushes one finished WAL file (segment, .history or .backup) through the datasafed
# interface, zstd-compressed, under a per-day directory as the KubeBlocks PostgreSQL
# addon lays out its WAL archive: /wal/YYYYMMDD/<file>.zst. A non-zero exit makes
# PostgreSQL keep the segment and retry, so a failed push never leaves a hole.
set -eu
path=$1
name=$2
day=$(date -u +%Y%m%d)
datasafed push -z zstd-fastest - "/wal/$day/$name.zst" < "$path"
