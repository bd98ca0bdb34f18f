#!/bin/sh
# dprepo image: install the datasafed binary and the CA certificates into DIR, as the
# `dp-copy-datasafed` init container of KubeBlocks' backup, restore and delete pods runs
# it (`/bin/sh -c "/scripts/install-datasafed.sh /bin/datasafed"`, DIR an emptyDir that
# the pod's other containers mount at the same path and add to PATH).
# The binary is static, so it runs in whatever image the backup script uses; the
# certificates are the image's /etc/ssl/certs (Debian's ca-certificates bundle).
set -e
if [ "$#" -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dest="$1"
mkdir -p "$dest"
cp /datasafed "$dest/datasafed.tmp"
chmod 0755 "$dest/datasafed.tmp"
mv -f "$dest/datasafed.tmp" "$dest/datasafed"
if [ -d /etc/ssl/certs ]; then
  mkdir -p "$dest/certs"
  cp -L -R /etc/ssl/certs/. "$dest/certs/"
fi
