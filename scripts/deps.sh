#!/usr/bin/env bash
# System packages the build needs, installed only when missing (idempotent):
# RocksDB as a shared library (the local index cache; .cargo/config.toml points the
# rocksdb crate at it) and libclang for the crate's binding generator.
set -euo pipefail
missing=()
for package in librocksdb-dev libclang-dev; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    sudo_cmd=()
    [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" > /dev/null
fi
