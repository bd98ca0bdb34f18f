#!/bin/bash
# Stored bytes of a second database base backup streamed through stdin, per tool/setting.
# Usage: scripts/bench-db-streams.sh DB1.tar DB2.tar WORKDIR SETTING...
#   SETTING: restic | borg | dprepo:MODE:MIN:AVG:MAX (MODE auto or cdc, sizes as
#   `dprepo init --stream-chunker`). dprepo is target/release/dprepo (override: $DPREPO).
# Prints one line per setting: repo bytes after db1, bytes added by db2 (du -sb), chunks,
# and wall/user/sys seconds and peak RSS KiB of each backup (/usr/bin/time).
set -euo pipefail
db1=$1 db2=$2 work=$3; shift 3
DPREPO=${DPREPO:-$(dirname "$0")/../target/release/dprepo}
export RESTIC_PASSWORD=bench DPREPO_PASSWORD=bench BORG_PASSPHRASE=bench
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
T='%e %U %S %M'
size() { du -sb "$1" | cut -f1; }
for setting in "$@"; do
  repo=$work/repo-${setting//:/-}
  rm -rf "$repo"
  case $setting in
    restic)
      restic init -r "$repo" -q
      back() { /usr/bin/time -f "$T" -o "$work/time" restic -r "$repo" backup --stdin --stdin-filename base.tar --json < "$1" | tail -1 > "$work/out"; jq -r '"data_blobs=\(.data_blobs) added=\(.data_added)"' "$work/out"; } ;;
    borg)
      borg init -e repokey "$repo"
      back() { /usr/bin/time -f "$T" -o "$work/time" borg create --stats "$repo::$(basename "$1")" - < "$1" > "$work/out" 2>&1; grep -E "Chunk index" "$work/out" | tr -s ' ' | sed 's/^/borg /'; } ;;
    dprepo:*)
      IFS=: read -r _ mode min avg max <<< "$setting"
      export DPREPO_REPOSITORY=$repo
      "$DPREPO" init --stream-chunker "$min:$avg:$max" > /dev/null
      back() { /usr/bin/time -f "$T" -o "$work/time" "$DPREPO" --json backup --stdin --stdin-name base.tar --stream-chunking "$mode" < "$1" > "$work/out"; jq -r '"blobs_added=\(.summary.blobs_added) bytes_added=\(.summary.bytes_added) stored=\(.summary.bytes_stored) tar_page_size=\(.chunker.tar_page_size)"' "$work/out"; } ;;
    *) echo "unknown setting $setting" >&2; exit 2 ;;
  esac
  sync; back "$db1"; t1=$(cat "$work/time"); s1=$(size "$repo")
  sync; back "$db2"; t2=$(cat "$work/time"); s2=$(size "$repo")
  echo "RESULT $setting after_db1=$s1 added_by_db2=$((s2 - s1)) time1=[$t1] time2=[$t2]"
done
