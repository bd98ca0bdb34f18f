#!/usr/bin/env bash
# The whole test suite. Starts what the tests need on 127.0.0.1 (moto, an S3-compatible
# server, installed from PyPI if missing), installs the database servers the database
# tests start themselves, builds the static binaries the packaging tests need, runs
# cargo test, and stops what it started.
# Extra arguments go to cargo test (and skip the lint step, which only the whole suite runs).
# DPREPO_SKIP_PACKAGING_TESTS=1 skips the static build, the image tools and
# tests/tests/packaging.rs (which then says it was skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${DPREPO_SKIP_PACKAGING_TESTS:-}" = 1 ]; then
    bash scripts/deps.sh
else
    bash scripts/deps.sh static images
fi

port=${DPREPO_TEST_S3_PORT:-5000}
python3 -c 'import moto.server' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check 'moto[server]==5.2.*'

reachable() { python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; }
if ! reachable; then
    python3 -m moto.server -H 127.0.0.1 -p "$port" > "${TMPDIR:-/tmp}/dprepo-test-moto.log" 2>&1 &
    moto_pid=$!
    trap 'kill $moto_pid 2>/dev/null || true' EXIT
    for _ in $(seq 1 100); do reachable && break; sleep 0.2; done
    reachable || { echo "moto did not start on 127.0.0.1:$port; see ${TMPDIR:-/tmp}/dprepo-test-moto.log" >&2; exit 1; }
fi
export DPREPO_TEST_S3_ENDPOINT="http://127.0.0.1:$port"

# The database end-to-end tests (tests/tests/postgres_pitr.rs, mariadb_dump.rs,
# redis_rdb.rs) run real servers from the distribution's packages; install the missing
# ones (Debian names).
# DPREPO_SKIP_DB_TESTS=1 skips those tests and this step.
if [ "${DPREPO_SKIP_DB_TESTS:-}" != 1 ]; then
    db_packages=()
    compgen -G '/usr/lib/postgresql/*/bin/pg_basebackup' > /dev/null || db_packages+=(postgresql)
    [ -x /usr/sbin/mariadbd ] || db_packages+=(mariadb-server)
    command -v mariabackup > /dev/null || db_packages+=(mariadb-backup)
    command -v zstd > /dev/null || db_packages+=(zstd)
    [ -x /usr/bin/redis-server ] || db_packages+=(redis-server)
    command -v redis-cli > /dev/null || db_packages+=(redis-tools)
    if [ ${#db_packages[@]} -gt 0 ]; then
        sudo=()
        [ "$(id -u)" = 0 ] || sudo=(sudo)
        echo "installing ${db_packages[*]} for the database tests" >&2
        "${sudo[@]}" apt-get update
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${db_packages[@]}"
    fi
fi

# The whole suite (no arguments, as CI runs it) first checks the house rules: fmt, clippy
# and rustdoc without warnings (scripts/lint.sh). DPREPO_SKIP_LINT=1 skips them.
if [ $# -eq 0 ] && [ "${DPREPO_SKIP_LINT:-}" != 1 ]; then
    bash scripts/lint.sh
fi

# The end-to-end tests run the real dprepo binary, which `cargo test` alone does not
# build (it builds the package's test harness instead).
cargo build --workspace --bins
# The static dprepo and dprepo-controller (tests/tests/packaging.rs runs them in empty
# roots and builds the image from them): the `static` profile, in the same target dir
# under the host triple.
if [ "${DPREPO_SKIP_PACKAGING_TESTS:-}" != 1 ]; then
    DPREPO_STATIC_BIN_DIR=$(bash scripts/build-static.sh | tail -n 1)
    export DPREPO_STATIC_BIN_DIR
fi
cargo test --workspace "$@"
