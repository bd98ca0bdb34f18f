#!/usr/bin/env bash
# Cold backup pod at scale (issue 26 point 3, SPEC.md section 15 S-7). Measures, with an
# empty cache directory, a backup of a 1 GiB tree of which 2% changed into a repository
# grown to N blobs (default 10 million):
#   cold  : the default path (parent locator, no index file read)
#   full  : DPREPO_FULL_INDEX=1 (every index file, RocksDB rebuilt)
# on the local backend and on S3 (moto). Records wall, first_pack_secs, bytes down and peak
# RSS in $WORK/results.tsv.
# Status: written from the design's draft; its local steps are the ones benches/NOTES.md
# ("Cold backup pod") ran by hand at 1 and 10 million blobs with a smaller tree; the
# script as a whole, and its S3 part, have not been run yet.
# Usage: bash benches/cold-backup/run.sh [BLOBS]
# Env: WORK (default /var/tmp/dprepo-bench/cold-backup), DPREPO_BIN, GROW_BIN,
#      MOTO_PORT (default 5126), SKIP_S3=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
blobs=${1:-10000000}
work=${WORK:-/var/tmp/dprepo-bench/cold-backup}
if [ -z "${DPREPO_BIN:-}" ] || [ -z "${GROW_BIN:-}" ]; then
    cargo build --release -q -p dprepo-tools --bin dprepo
    cargo build --release -q -p dprepo-repo-format --example grow_repository
fi
dprepo=${DPREPO_BIN:-$PWD/target/release/dprepo}
grow=${GROW_BIN:-$PWD/target/release/examples/grow_repository}
mkdir -p "$work"
repo=$work/repo tree=$work/tree
printf 'cold backup benchmark\n' > "$work/password"
export DPREPO_PASSWORD_FILE=$work/password
results=$work/results.tsv
printf 'backend\tpath\tindex_mode\twall_s\tfirst_pack_s\tbytes_down\tindex_bytes\tpeak_rss_kib\n' > "$results"

# 1. Grow (resumable); remember the grown data packs (no path reads them; left out of moto).
"$grow" "$repo" "$work/password" "$blobs" 2>&1 | tail -1
(cd "$repo" && find data -type f) | sort > "$work/grown-packs"
index_bytes=$(du -sb "$repo/index" | cut -f1)

# 2. The tree: 1 GiB = 256 dirs x 64 files x 64 KiB of seeded random bytes.
if [ ! -d "$tree" ]; then
python3 - "$tree" <<'PY'
import os, random, sys
root, r = sys.argv[1], random.Random(26)
for d in range(256):
    os.makedirs(f"{root}/d{d:03}", exist_ok=True)
    for f in range(64):
        with open(f"{root}/d{d:03}/f{f:02}", "wb") as fh:
            fh.write(r.randbytes(64 << 10))
PY
fi

# 3. Parent snapshot A (full path on purpose: it writes A's locator).
DPREPO_REPOSITORY=$repo "$dprepo" --cache-dir "$work/cache-a" backup --host bench "$tree" > /dev/null

# 4. Change 2%: rewrite every 50th file (328 of 16,384) with new bytes of the same size.
python3 - "$tree" <<'PY'
import os, random, sys
root, r, n = sys.argv[1], random.Random(2612), 0
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
for i, p in enumerate(files):
    if i % 50 == 0:
        with open(p, "r+b") as fh:
            fh.write(r.randbytes(64 << 10)); n += 1
print(f"changed {n} of {len(files)} files", file=sys.stderr)
PY

measure() { # backend, path label (cold|full), repository, extra global args...
    local backend=$1 label=$2 location=$3; shift 3
    local full=""; [ "$label" = full ] && full=1
    rm -rf "$work/cache-run"
    /usr/bin/time -f 'TIME %e %M' env DPREPO_REPOSITORY="$location" DPREPO_FULL_INDEX="$full" \
        "$dprepo" --verbose --json --cache-dir "$work/cache-run" "$@" backup --host bench "$tree" \
        > "$work/out.json" 2> "$work/err.txt" || { cat "$work/err.txt" >&2; exit 1; }
    read -r _ wall rss <<< "$(grep '^TIME ' "$work/err.txt" | tail -1)"
    python3 - "$work/out.json" "$work/err.txt" "$backend" "$label" "$wall" "$index_bytes" "$rss" >> "$results" <<'PY'
import json, sys
out, err, backend, label, wall, index_bytes, rss = sys.argv[1:]
o = json.load(open(out))
req = next(json.loads(l)["requests"] for l in open(err) if l.startswith('{"requests"') or '"requests"' in l[:20])
print("\t".join([backend, label, str(o.get("index_mode")), wall, str(o.get("first_pack_secs")),
                 str(req["bytes_down"]), index_bytes, rss]))
PY
    tail -1 "$results"
}

# 5. Local: each path on its own hard-link copy (files are immutable; writes go through
#    temporary files and rename/link, so the copies never share a modified file).
for label in cold full; do
    rm -rf "$work/repo-$label"; cp -al "$repo" "$work/repo-$label"
done
measure local cold "$work/repo-cold"
measure local full "$work/repo-full"

# 6. S3 (moto): the same repository without the grown data packs.
if [ -z "${SKIP_S3:-}" ]; then
    port=${MOTO_PORT:-5126}
    python3 -m moto.server -H 127.0.0.1 -p "$port" > "$work/moto.log" 2>&1 &
    moto=$!; trap 'kill $moto' EXIT
    sleep 2
    export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
    for label in cold full; do
    python3 - "$repo" "$work/grown-packs" "http://127.0.0.1:$port" "bench-$label" <<'PY'
import boto3, os, sys
from concurrent.futures import ThreadPoolExecutor
root, grown, endpoint, bucket = sys.argv[1:]
skip = set(open(grown).read().split())
s3 = boto3.client("s3", endpoint_url=endpoint)
s3.create_bucket(Bucket=bucket)
names = [os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs]
names = [n for n in names if n not in skip and not n.startswith(".tmp-") and "/.tmp-" not in n]
with ThreadPoolExecutor(16) as pool:
    list(pool.map(lambda n: s3.upload_file(os.path.join(root, n), bucket, n), names))
print(f"{bucket}: {len(names)} files", file=sys.stderr)
PY
    done
    measure s3 cold "s3://bench-cold" --s3-endpoint "http://127.0.0.1:$port"
    measure s3 full "s3://bench-full" --s3-endpoint "http://127.0.0.1:$port"
fi
echo "results: $results"
