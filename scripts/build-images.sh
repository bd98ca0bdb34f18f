#!/usr/bin/env bash
# Builds the dprepo OCI image offline, from scratch: no base image, only our static
# binaries and files from Debian packages (busybox-static for /bin/sh, ca-certificates).
#
#   scripts/build-images.sh [--bin-dir DIR] [--output DIR] [--tag TAG]
#
# --bin-dir  directory holding the static dprepo and dprepo-controller
#            (default: build them with scripts/build-static.sh)
# --output   where to write dprepo-<version>.oci.tar (default: target/images)
# --tag      image reference (default: docker.io/dprepo/dprepo:<version>)
#
# One image serves every role (say which binary with the pod's command):
#   /dprepo                         the CLI; entrypoint
#   /datasafed -> dprepo            the datasafed interface (same binary, by name)
#   /dprepo-controller              the operator (deploy/deployment.yaml runs it)
#   /scripts/install-datasafed.sh   KubeBlocks' DATASAFED_IMAGE contract: copies
#                                   /datasafed and /etc/ssl/certs into the given directory
#   /bin/sh (+cp, mkdir, chmod, mv) busybox-static, for that script
#   /etc/ssl/certs/ca-certificates.crt, /etc/passwd, /etc/group, /tmp
# User 65532:65532 (nonroot); labels org.opencontainers.image.* plus
# io.dprepo.linkage=static. Push with skopeo, e.g.
#   skopeo copy oci-archive:target/images/dprepo-0.1.0.oci.tar docker://REGISTRY/dprepo/dprepo:0.1.0
# Needs root (or a user with subuid ranges) for buildah; scripts/deps.sh images
# installs the tools.
set -euo pipefail
bin_dir=""
out_dir=""
tag=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir=$(realpath -m "$2"); shift 2 ;;
        --output) out_dir=$(realpath -m "$2"); shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        *) echo "usage: $0 [--bin-dir DIR] [--output DIR] [--tag TAG]" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
out_dir=${out_dir:-target/images}
bash scripts/deps.sh images
[ -n "$bin_dir" ] || bin_dir=$(bash scripts/build-static.sh | tail -n 1)

for bin in dprepo dprepo-controller; do
    [ -x "$bin_dir/$bin" ] || { echo "$bin_dir/$bin missing: build it with scripts/build-static.sh" >&2; exit 1; }
    if readelf -d "$bin_dir/$bin" | grep -q NEEDED; then
        echo "$bin_dir/$bin is not static (scripts/build-static.sh builds static binaries)" >&2
        exit 1
    fi
done
version=$("$bin_dir/dprepo" version --json | sed -n 's/.*"version":"\([^"]*\)".*/\1/p')
commit=$("$bin_dir/dprepo" version --json | sed -n 's/.*"commit":"\([^"]*\)".*/\1/p')
[ -n "$version" ] && [ -n "$commit" ] || { echo "cannot read the version of $bin_dir/dprepo" >&2; exit 1; }
tag=${tag:-docker.io/dprepo/dprepo:$version}
# The commit's time, so that rebuilding the same commit gives the same labels.
created=$(git log -1 --format=%cI "$commit" 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)

work=$(mktemp -d "${TMPDIR:-/tmp}/dprepo-images.XXXXXX")
ctr=""
buildah_() { buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs "$@"; }
cleanup() {
    [ -z "$ctr" ] || buildah_ rm "$ctr" > /dev/null 2>&1 || true
    # vfs layers are plain directories; buildah leaves nothing mounted with vfs.
    rm -rf "$work"
}
trap cleanup EXIT

# The root file system, assembled here and copied into the image in one layer.
root=$work/rootfs
mkdir -p "$root"/{bin,scripts,tmp,etc/ssl/certs}
chmod 1777 "$root/tmp"
install -m 0755 "$bin_dir/dprepo" "$root/dprepo"
install -m 0755 "$bin_dir/dprepo-controller" "$root/dprepo-controller"
ln -s dprepo "$root/datasafed"
install -m 0755 /bin/busybox "$root/bin/busybox"
for applet in sh cp mkdir chmod mv rm ls cat; do ln -s busybox "$root/bin/$applet"; done
install -m 0755 scripts/image/install-datasafed.sh "$root/scripts/install-datasafed.sh"
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/:/bin/sh\nnonroot:x:65532:65532:nonroot:/tmp:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"

ctr=$(buildah_ from scratch)
buildah_ copy "$ctr" "$root/" / > /dev/null
buildah_ config \
    --entrypoint '["/dprepo"]' --cmd '["--help"]' \
    --user 65532:65532 --workingdir /tmp \
    --env PATH=/bin:/ \
    --label org.opencontainers.image.title=dprepo \
    --label "org.opencontainers.image.description=dprepo: deduplicating snapshot repository, datasafed for KubeBlocks, and the dataprotection controller" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$commit" \
    --label "org.opencontainers.image.created=$created" \
    --label org.opencontainers.image.licenses=Apache-2.0 \
    --label "org.opencontainers.image.ref.name=$tag" \
    --label io.dprepo.linkage=static \
    "$ctr"
mkdir -p "$out_dir"
archive=$out_dir/dprepo-$version.oci.tar
rm -f "$archive"
buildah_ commit --quiet --format oci "$ctr" "oci-archive:$archive:$tag" > /dev/null
echo "$archive"
