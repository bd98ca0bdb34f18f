#!/usr/bin/env bash
# Builds `dprepo` (also `datasafed` under that name) and `dprepo-controller` as fully
# static executables: glibc with crt-static, and RocksDB from Debian's librocksdb.a with
# the static libraries of the compression codecs it was built with. They are static, non-PIE
# executables (`ldd` says "statically linked"; no shared library is named), so they run in any Linux image (Debian, UBI, Alpine,
# distroless) or in an empty root file system.
#
# Usage: scripts/build-static.sh [extra cargo build arguments]
# Prints the directory holding the binaries on its last line of output (stdout):
#   $CARGO_TARGET_DIR/<host triple>/static/{dprepo,dprepo-controller}
#
# Profile `static` (Cargo.toml): release optimisation without LTO, so that CI builds it
# in minutes. The binaries find TLS roots in the image's /etc/ssl/certs (or
# SSL_CERT_FILE / SSL_CERT_DIR); name resolution is glibc's, built into libc.a (files and
# dns from /etc/hosts, /etc/resolv.conf, as the kubelet writes them into every pod).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh static

multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
triple=$(rustc -vV | sed -n 's/^host: //p')
libdir=/usr/lib/$multiarch
for lib in librocksdb.a libsnappy.a liblz4.a libzstd.a libz.a libbz2.a; do
    [ -f "$libdir/$lib" ] || { echo "missing $libdir/$lib (scripts/deps.sh static installs it)" >&2; exit 1; }
done

# --target keeps build scripts and proc macros dynamic (they run on this machine) while
# the binaries get crt-static. The rocksdb crate links RocksDB from ROCKSDB_LIB_DIR
# (ROCKSDB_STATIC: the archive) and asks for libstdc++ as a shared library, which the
# linker looks up after -Bdynamic. So ROCKSDB_LIB_DIR is a directory of our own, searched
# first: librocksdb.a, and a linker script libstdc++.so naming the archives RocksDB needs
# (libstdc++ and the codecs Debian built it with; the rocksdb crate's own compression
# features stay off). The codecs are named by path: `-lzstd` would find the libzstd.a
# that zstd-sys builds for our own zstd use, which lacks the dictionary builder RocksDB
# calls. No codec is passed as a global `-C link-arg=-l...`: rustc puts link-args after
# its closing `-Bdynamic`, so in a binary without RocksDB (dprepo-controller, which lacks
# this directory on its search path) `-lsnappy` found Debian's libsnappy.so. --as-needed
# dropped it (no NEEDED), but the shared input made the linker emit a dynamic section
# whose GLOB_DAT relocations fell inside __rela_iplt_start..end, and glibc's static
# start-up aborted on them ("Unexpected reloc type in static binary") before TLS was
# set up: a SIGSEGV before main (issue 23).
link_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")/static-link
mkdir -p "$link_dir"
ln -sf "$libdir/librocksdb.a" "$link_dir/librocksdb.a"
stdcxx=$(g++ -print-file-name=libstdc++.a 2>/dev/null || gcc -print-file-name=libstdc++.a)
[ -f "$stdcxx" ] || { echo "libstdc++.a not found (install g++)" >&2; exit 1; }
archives="$stdcxx"
# Non-PIE (`relocation-model=static`): fixed-address executables that need no start-up
# relocation.
rustflags="-C target-feature=+crt-static -C relocation-model=static"
for lib in snappy lz4 zstd z bz2; do
    echo "INPUT($libdir/lib$lib.a)" > "$link_dir/lib$lib.so"
    archives+=" $libdir/lib$lib.a"
done
echo "INPUT($archives)" > "$link_dir/libstdc++.so"
export ROCKSDB_LIB_DIR=$link_dir
export ROCKSDB_STATIC=1
env_name=CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUSTFLAGS
export "$env_name=$rustflags"

cargo build --profile static --target "$triple" -p dprepo-tools -p dprepo-controller --bins "$@" >&2

# Absolute: the tests that read it (DPREPO_STATIC_BIN_DIR) run in their package directory.
out=$(realpath -m "${CARGO_TARGET_DIR:-target}/$triple/static")
# Static executables: `ldd` says "statically linked" (or "not a dynamic executable"),
# and the ELF file has no dynamic section at all (not only no NEEDED: a dynamic section
# in a static glibc executable crashes it at start-up, see above).
for bin in dprepo datasafed dprepo-controller; do
    if ! readelf -d "$out/$bin" | grep -q 'no dynamic section' || ldd "$out/$bin" 2>&1 | grep -q '=>'; then
        echo "$out/$bin is dynamically linked:" >&2
        ldd "$out/$bin" >&2 || true
        exit 1
    fi
done
echo "$out"
