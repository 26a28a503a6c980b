#!/usr/bin/env bash
# Assembles the perimeter-operator image's root filesystem without a Docker engine: the built
# binary, the shared libraries it links (from ldd), the CA bundle it checks the Anthropic API
# with (where OpenSSL looks: /usr/lib/ssl/cert.pem and certs/), passwd/group entries for uid
# 65532 and an nsswitch.conf. No shell and no userland: the operator is one process. Then checks
# that the binary starts inside it as uid 65532 on a read-only root with nothing writable and
# reaches its in-cluster configuration (which proves the loader, every library and the user),
# packs an OCI image layout with the Dockerfile's user and entrypoint, and tars it as the OCI
# archive a real node's containerd imports (`ctr images import`; localcluster/real_node.h) as
# localhost/perimeter/perimeter-operator:<tag>.
#   operator/image/build-image.sh <binary> [out-dir] [archive] [tag]
# Cached by content: the archive is kept when the hash of the binary, every library it links,
# the CA bundle and these scripts is the one recorded beside it (<archive>.sha256).
# Needs umoci for the archive; without it the script fails.
set -euo pipefail

binary=${1:?usage: build-image.sh <perimeter-operator binary> [out-dir] [archive] [tag]}
out_dir=${2:-build/images/perimeter-operator.d}
archive=${3:-build/images/perimeter-operator.tar}
version=${4:-0.1.0}
[[ -x $binary ]] || { echo "build-image: $binary is not built (cmake --build <build> --target perimeter-operator)" >&2; exit 1; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lib=$here/../../hack/images/lib/oci-rootfs.sh
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[[ -f $ca_bundle ]] || { echo "build-image: $ca_bundle is missing (apt-get install ca-certificates)" >&2; exit 1; }

stamp=$archive.sha256
hash=$( { echo "$version"; cat "$binary" "$ca_bundle" "$0" "$lib";
          ldd "$binary" | awk '/=>/ { print $3 } /^[ \t]*\// { print $1 }' | sort -u | xargs -r cat; } |
       sha256sum | cut -d' ' -f1)
if [[ -f $archive && "$(cat "$stamp" 2>/dev/null)" == "$hash" ]]; then
  touch "$archive"  # newer than the binary, so the build does not ask again
  echo "build-image: $archive is current (content hash $hash)"
  exit 0
fi

rootfs=$out_dir/rootfs
rm -rf "$out_dir"
mkdir -p "$rootfs"/{usr/local/bin,etc/ssl/certs,usr/lib/ssl,tmp}

# shellcheck source=../../hack/images/lib/oci-rootfs.sh
source "$lib"

copy_program "$binary" /usr/local/bin/perimeter-operator
strip "$rootfs/usr/local/bin/perimeter-operator" 2>/dev/null || true
cp -L "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
ln -s /etc/ssl/certs/ca-certificates.crt "$rootfs/usr/lib/ssl/cert.pem"
ln -s /etc/ssl/certs "$rootfs/usr/lib/ssl/certs"
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
# The API's name resolves through the pod's /etc/hosts and resolv.conf (the kubelet mounts both).
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
chmod 1777 "$rootfs/tmp"

echo "build-image: rootfs at $rootfs ($(du -sh "$rootfs" | cut -f1))"

# Check: inside the rootfs, as uid 65532, on a read-only root with nothing mounted writable (the
# chart mounts nothing either), told it runs in a cluster whose ServiceAccount files are absent,
# the operator must parse its flags, take the in-cluster path and stop there with exit 1, naming
# the ServiceAccount token: so the loader, every library and the user are right.
check() {
  local status=0 output
  output=$("$@" 2>&1) || status=$?
  if [[ $status -ne 1 || $output != *'service-account token'* ]]; then
    echo "build-image: check failed (exit $status): $output" >&2
    return 1
  fi
}
chroot=$(command -v chroot || true)
if [[ $(id -u) -eq 0 && -n $chroot ]] && command -v unshare >/dev/null; then
  check unshare --mount --fork sh -c "
    mount --bind '$rootfs' '$rootfs' && mount -o remount,bind,ro '$rootfs' &&
    exec env -i KUBERNETES_SERVICE_HOST=10.0.0.1 KUBERNETES_SERVICE_PORT=443 \
      $chroot --userspec=65532:65532 '$rootfs' /usr/local/bin/perimeter-operator \
      --leader-elect=true --leader-election-namespace=perimeter-system"
  echo "build-image: checked: starts as uid 65532 on a read-only root and takes the in-cluster configuration"
else
  echo "build-image: not root, so the chroot check is skipped; run as root to check" >&2
fi

pack_oci_archive "$out_dir" "$version" "$archive" --config.user 65532:65532 --config.workingdir / \
  --config.entrypoint /usr/local/bin/perimeter-operator
echo "$hash" >"$stamp"
echo "build-image: image size: rootfs $(du -sb "$rootfs" | cut -f1) bytes, archive $(stat -c %s "$archive") bytes"
