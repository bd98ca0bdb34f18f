#!/bin/sh
# PostgreSQL restore_command of the database end-to-end tests:
#   restore_command = 'pg-restore-wal %f %p'
# Fetches WAL file <name> from whichever /wal/YYYYMMDD/ directory holds it (see
# pg-archive-wal), decompressed, into <path>. Exits non-zero when no directory has it,
# which PostgreSQL reads as "not archived" (asked for timeline history files and for the
# segment after the last one). The file appears at <path> only when complete.
set -u
name=$1
path=$2
for day in $(datasafed list /wal/); do
    day=${day%/}
    day=${day##*/}
    if datasafed pull -d zstd-fastest "/wal/$day/$name.zst" - > "$path.part"; then
        mv "$path.part" "$path"
        exit 0
    fi
done
rm -f "$path.part"
echo "pg-restore-wal: $name is not in the archive" >&2
exit 1
