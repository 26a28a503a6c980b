#!/usr/bin/env bash
# The real node's cluster DNS image, without any registry: CoreDNS (built from the Go module
# proxy by hack/tools/build-tools.sh at versions.env's COREDNS_VERSION, static) alone in an
# otherwise empty root filesystem, run as uid 65532, packed with umoci as an OCI archive the node
# imports as localhost/perimeter/coredns:1 (the CoreDNS version is the image's
# org.opencontainers.image.version label). localcluster/real_node.cc runs it in kube-system.
#   hack/images/coredns/build-image.sh <out-dir>
# Cached by the binary's and this script's hash: a second run with nothing changed does nothing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:?usage: build-image.sh <out-dir>}
# `make tools` built it; a missing one is built now (from the module proxy, cached).
bin_dir=$("$here/../../tools/build-tools.sh" coredns | tail -n 1)
binary=$bin_dir/coredns
[[ -x $binary ]] || { echo "[images] ERROR: $binary missing (make tools builds it)" >&2; exit 1; }
# shellcheck source=../../tools/versions.env
source "$here/../../tools/versions.env"

archive="$out/coredns.tar" stamp="$out/coredns.sha256"
hash=$(cat "$binary" "$0" | sha256sum | cut -d' ' -f1)
if [[ -f $archive && "$(cat "$stamp" 2>/dev/null)" == "$hash" ]]; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"/{etc,tmp}
# shellcheck source=../lib/oci-rootfs.sh
source "$here/../lib/oci-rootfs.sh"
install -D -m 0755 "$binary" "$rootfs/coredns"
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"
# The Corefile comes from the node's ConfigMap (mounted at /etc/coredns).
pack_oci_archive "$work/image" 1 "$archive" \
  --config.entrypoint /coredns --config.cmd -conf --config.cmd /etc/coredns/Corefile \
  --config.user 65532:65532 \
  --config.label "org.opencontainers.image.version=${COREDNS_VERSION#v}" >&2
echo "$hash" >"$stamp"
echo "[images] built $archive ($(stat -c %s "$archive") bytes)" >&2
