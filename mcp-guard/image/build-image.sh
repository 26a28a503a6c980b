#!/usr/bin/env bash
# Assembles the perimeter-mcp-guard image's root filesystem without a Docker engine: the built
# binary, the shared libraries it links (from ldd), the CA bundle, and passwd/group entries for
# uid 65532. No shell and no userland: nothing in the gateway pod runs anything else. Then checks
# that `perimeter-mcp-guard --check` accepts a config inside it as uid 65532 on a read-only root
# (which proves the loader, every library and the user), packs an OCI image layout with the
# Dockerfile's user, entrypoint and command, and tars it as the OCI archive a real node's
# containerd imports (`ctr images import`; localcluster/real_node.h) as
# localhost/perimeter/perimeter-mcp-guard:<tag>.
#   mcp-guard/image/build-image.sh <binary> [out-dir] [archive] [tag]
# Needs umoci for the archive; without it the script fails.
set -euo pipefail

binary=${1:?usage: build-image.sh <perimeter-mcp-guard binary> [out-dir] [archive] [tag]}
out_dir=${2:-build/images/perimeter-mcp-guard.d}
archive=${3:-build/images/perimeter-mcp-guard.tar}
version=${4:-0.1.0}
config_dir=/etc/perimeter-mcp-guard/config
[[ -x $binary ]] || { echo "build-image: $binary is not built (cmake --build <build> --target perimeter-mcp-guard)" >&2; exit 1; }

rootfs=$out_dir/rootfs
rm -rf "$out_dir"
mkdir -p "$rootfs"/{usr/local/bin,etc/ssl/certs,tmp} "$rootfs$config_dir" \
         "$rootfs/etc/perimeter-mcp-guard/upstream-ca"

source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/hack/images/lib/oci-rootfs.sh"

copy_program "$binary" /usr/local/bin/perimeter-mcp-guard
strip "$rootfs/usr/local/bin/perimeter-mcp-guard" 2>/dev/null || true
# The system CAs (an HTTPS upstream with no upstream_ca_file), where OpenSSL looks by default.
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
  cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  mkdir -p "$rootfs/usr/lib/ssl"
  ln -s /etc/ssl/certs "$rootfs/usr/lib/ssl/certs"
  ln -s /etc/ssl/certs/ca-certificates.crt "$rootfs/usr/lib/ssl/cert.pem"
fi
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
# Upstreams are Service DNS names: the kubelet mounts resolv.conf; hosts first, then DNS.
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
chmod 1777 "$rootfs/tmp"

echo "build-image: rootfs at $rootfs ($(du -sh "$rootfs" | cut -f1))"

# Check: inside the rootfs, as uid 65532, on a read-only root with the config directory mounted
# as the pod mounts it, `--check` must print `config ok` and exit 0.
check_config='metrics_listen: 0.0.0.0:9464
routes:
  - name: tickets
    listen: 127.0.0.1:9100
    upstream: http://tickets.mcp.svc.cluster.local:8080
    allowed_cidrs: ["10.0.0.0/8"]
    tools: {allow: ["*"], deny: ["delete_*"]}
'
check() {
  local status=0 output
  output=$("$@" 2>&1) || status=$?
  if [[ $status -ne 0 || $output != *'config ok'* ]]; then
    echo "build-image: check failed (exit $status): $output" >&2
    return 1
  fi
}
if [[ $(id -u) -eq 0 ]] && command -v unshare >/dev/null && command -v chroot >/dev/null; then
  check unshare --mount --fork sh -c "
    mount --bind '$rootfs' '$rootfs' && mount -o remount,bind,ro '$rootfs' &&
    mount -t tmpfs tmpfs '$rootfs$config_dir' &&
    printf '%s' '$check_config' >'$rootfs$config_dir/guard.yaml' &&
    exec chroot --userspec=65532:65532 '$rootfs' /usr/local/bin/perimeter-mcp-guard \
      --check --config $config_dir/guard.yaml"
  echo "build-image: checked: --check accepts a config as uid 65532 on a read-only root"
else
  echo "build-image: not root, so the chroot check is skipped; run as root to check" >&2
fi

pack_oci_archive "$out_dir" "$version" "$archive" --config.user 65532:65532 --config.workingdir / \
  --config.entrypoint /usr/local/bin/perimeter-mcp-guard \
  --config.cmd=--config --config.cmd="$config_dir/guard.yaml"
