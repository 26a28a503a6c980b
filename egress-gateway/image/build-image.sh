#!/usr/bin/env bash
# Assembles the perimeter-egress-gateway image's root filesystem without a Docker engine: the
# built binary, the shared libraries it links (from ldd), and passwd/group entries for uid 65532.
# No shell and no userland. Then checks that `perimeter-egress-gateway --check` accepts a config
# and its key inside it as uid 65532 on a read-only root (which proves the loader, every library
# and the user), packs an OCI image layout with the Dockerfile's user, entrypoint and command, and
# tars it as the OCI archive a real node's containerd imports (`ctr images import`;
# localcluster/real_node.h) as localhost/perimeter/perimeter-egress-gateway:<tag>.
#   egress-gateway/image/build-image.sh <binary> [out-dir] [archive] [tag]
# Needs umoci for the archive; without it the script fails.
set -euo pipefail

binary=${1:?usage: build-image.sh <perimeter-egress-gateway binary> [out-dir] [archive] [tag]}
out_dir=${2:-build/images/perimeter-egress-gateway.d}
archive=${3:-build/images/perimeter-egress-gateway.tar}
version=${4:-0.1.0}
config_dir=/etc/perimeter-egress/config
key_dir=/var/run/perimeter-egress/key
[[ -x $binary ]] || { echo "build-image: $binary is not built (cmake --build <build> --target perimeter-egress-gateway)" >&2; exit 1; }

rootfs=$out_dir/rootfs
rm -rf "$out_dir"
mkdir -p "$rootfs"/{usr/local/bin,etc,tmp} "$rootfs$config_dir" "$rootfs$key_dir"

source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/hack/images/lib/oci-rootfs.sh"

copy_program "$binary" /usr/local/bin/perimeter-egress-gateway
strip "$rootfs/usr/local/bin/perimeter-egress-gateway" 2>/dev/null || true
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
# Upstreams are public names: the kubelet mounts resolv.conf; hosts first, then DNS.
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
chmod 1777 "$rootfs/tmp"

echo "build-image: rootfs at $rootfs ($(du -sh "$rootfs" | cut -f1))"

# Check: inside the rootfs, as uid 65532, on a read-only root with the config and key folders
# mounted as the pod mounts them, `--check` must print `config ok` and exit 0.
check_config="listen: 0.0.0.0:3128
metrics_listen: 0.0.0.0:9090
credentials_key_file: $key_dir/key
environments:
  - name: team-a/agents
    allow:
      - host: api.anthropic.com
      - host: \"*.pypi.org\"
"
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
    mount -t tmpfs tmpfs '$rootfs$config_dir' && mount -t tmpfs tmpfs '$rootfs$key_dir' &&
    printf '%s' '$check_config' >'$rootfs$config_dir/gateway.yaml' &&
    head -c 32 /dev/urandom >'$rootfs$key_dir/key' && chmod 0444 '$rootfs$key_dir/key' &&
    exec chroot --userspec=65532:65532 '$rootfs' /usr/local/bin/perimeter-egress-gateway \
      --check --config $config_dir/gateway.yaml"
  echo "build-image: checked: --check accepts a config and key as uid 65532 on a read-only root"
else
  echo "build-image: not root, so the chroot check is skipped; run as root to check" >&2
fi

pack_oci_archive "$out_dir" "$version" "$archive" --config.user 65532:65532 --config.workingdir / \
  --config.entrypoint /usr/local/bin/perimeter-egress-gateway \
  --config.cmd=--config --config.cmd="$config_dir/gateway.yaml"
