#!/usr/bin/env bash
# System packages the build needs, installed only when missing (idempotent).
#
#   scripts/deps.sh          RocksDB (the local index cache) as Debian's library and
#                            libclang for the rocksdb crate's binding generator; the
#                            linker finds librocksdb.so in the multiarch directory
#                            (.cargo/config.toml)
#   scripts/deps.sh static   also the static archives scripts/build-static.sh links
#                            (librocksdb.a comes with librocksdb-dev; the codecs' .a with
#                            their -dev packages)
#   scripts/deps.sh images   also buildah, umoci, skopeo and busybox-static for
#                            scripts/build-images.sh and tests/tests/packaging.rs
# Groups combine: `scripts/deps.sh static images`.
set -euo pipefail
packages=(librocksdb-dev libclang-dev)
for group in "$@"; do
    case "$group" in
        static) packages+=(libsnappy-dev liblz4-dev libzstd-dev zlib1g-dev libbz2-dev) ;;
        images) packages+=(buildah umoci skopeo busybox-static ca-certificates) ;;
        *) echo "scripts/deps.sh: unknown group $group (known: static, images)" >&2; exit 2 ;;
    esac
done
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    sudo_cmd=()
    [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi
