#!/usr/bin/env bash
# Peak RSS of `restic backup` of a small fixed-size data set into a restic
# repository that already holds N blobs, for several N.
#
#   benches/compare/memory_growth.sh [N ...]        default: 0 250000 1000000
#
# The repository is grown by backing up directories of small unique files
# (one blob each; 1000 files per directory, batches of at most $BATCH files,
# deleted after each batch). At each N, a fresh 50 MiB set (50 files of 1 MiB
# AES-CTR keystream, keyed by N, so nothing deduplicates) is backed up under
# /usr/bin/time. Results: $OUT/memory_growth.{json,md}; the repository is kept
# in $OUT/repo so that a re-run with larger N continues from it.
# Env: DPREPO_BENCH_DIR (/var/tmp/dprepo-bench), OUT ($DPREPO_BENCH_DIR/memgrowth),
#      BATCH (250000), MEASURE_MIB (50).
set -euo pipefail
BENCH=${DPREPO_BENCH_DIR:-/var/tmp/dprepo-bench}
OUT=${OUT:-$BENCH/memgrowth}
BATCH=${BATCH:-250000}
MEASURE_MIB=${MEASURE_MIB:-50}
[ $# -eq 0 ] && set -- 0 250000 1000000
mkdir -p "$OUT"
export RESTIC_REPOSITORY=$OUT/repo
export RESTIC_PASSWORD_FILE=$OUT/password
export XDG_CACHE_HOME=$OUT/cache
[ -e "$RESTIC_PASSWORD_FILE" ] || echo "memory-growth-bench" > "$RESTIC_PASSWORD_FILE"
log() { echo "[memgrowth $(date -u +%H:%M:%S)] $*" >&2; }
[ -e "$RESTIC_REPOSITORY/config" ] || restic init -q
blobs() { restic list blobs -q --no-lock | wc -l; }

grow() { # grow N_FILES LABEL: back up N_FILES new unique small files
  local n=$1 label=$2 dir=$OUT/grow
  rm -rf "$dir"
  python3 - "$dir" "$n" "$label" <<'PY'
import os, sys
root, n, label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:05d}")
    if i % 1000 == 0:
        os.makedirs(d)
    with open(os.path.join(d, f"f{i % 1000:03d}"), "w") as f:
        f.write(f"memory growth blob {label} {i} " + "x" * (i % 97) + "\n")
PY
  (cd "$OUT" && restic backup -q --tag grow grow)
  rm -rf "$dir"
}

results=$OUT/memory_growth.tsv
[ -e "$results" ] || printf 'target_n\tblobs_before\tpeak_rss_kib\twall_s\tuser_s\tsys_s\n' > "$results"
have=$(blobs)
log "repository holds $have blobs"
for target in "$@"; do
  batch_no=0
  while [ "$have" -lt $((target - 1000)) ]; do
    n=$((target - have)); [ "$n" -gt "$BATCH" ] && n=$BATCH
    batch_no=$((batch_no + 1))
    log "growing by $n files (towards $target)"
    grow "$n" "$target-$have"
    have=$(blobs)
    log "repository holds $have blobs"
  done
  m=$OUT/measure-$target
  rm -rf "$m" && mkdir -p "$m"
  key=$(printf '%064x' "$target")
  for i in $(seq -w 1 "$MEASURE_MIB"); do
    head -c $((1 << 20)) /dev/zero | openssl enc -aes-256-ctr -nosalt -K "$key" \
      -iv "$(printf '%032x' "$((10#$i))")" > "$m/part$i"
  done
  sync; (echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null || true
  /usr/bin/time -f '%e %U %S %M' -o "$OUT/time.txt" restic backup -q --tag measure "$m"
  read -r e u s rss < "$OUT/time.txt"
  log "N=$have: peak RSS $rss KiB, wall $e s"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$have" "$rss" "$e" "$u" "$s" >> "$results"
  rm -rf "$m"
  have=$(blobs)
done

python3 - "$results" "$OUT" <<'PY'
import json, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
rows = [dict(target_n=int(r[0]), blobs=int(r[1]), peak_rss_kib=int(r[2]), wall_s=float(r[3]),
             cpu_s=round(float(r[4]) + float(r[5]), 2)) for r in rows]
last = {}
for r in rows:  # keep the latest measurement per blob count
    last[r["blobs"]] = r
rows = sorted(last.values(), key=lambda r: r["blobs"])
slope = None
if len(rows) >= 2 and rows[-1]["blobs"] > rows[0]["blobs"]:
    slope = (rows[-1]["peak_rss_kib"] - rows[0]["peak_rss_kib"]) * 1024 / (rows[-1]["blobs"] - rows[0]["blobs"])
json.dump({"tool": "restic", "rows": rows, "slope_bytes_per_blob": slope},
          open(f"{sys.argv[2]}/memory_growth.json", "w"), indent=1)
md = ["| blobs in repository | peak RSS of `restic backup` (50 MiB new) | wall s | CPU s |",
      "|---:|---:|---:|---:|"]
for r in rows:
    md.append(f"| {r['blobs']:,} | {r['peak_rss_kib'] / 1024:.0f} MiB | {r['wall_s']} | {r['cpu_s']} |")
if slope is not None:
    md.append(f"\nSlope (first to last): {slope:.0f} bytes of peak RSS per blob.")
open(f"{sys.argv[2]}/memory_growth.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
