#!/usr/bin/env bash
# Assembles the runner image's root filesystem without a Docker engine: the built
# perimeter-runner, the shared libraries it links (from ldd), bash and a small userland for the
# agent's bash tool, /workspace owned by 65532, and a passwd entry for that uid. Then checks that
# the binary starts inside it as uid 65532 on a read-only root, packs an OCI image layout with the
# Dockerfile's user, workdir and entrypoint, and tars it as the OCI archive that a real node's
# containerd imports (hack/images/lib/oci-rootfs.sh).
#   runner-image/build-image.sh [build-dir] [out-dir] [archive]
# The archive (default <build-dir>/images/perimeter-runner.tar) needs umoci; without it the
# script fails.
set -euo pipefail

build_dir=${1:-build}
out_dir=${2:-$build_dir/images/perimeter-runner.d}
archive=${3:-$build_dir/images/perimeter-runner.tar}
version=0.1.0
binary=$build_dir/bin/perimeter-runner
[[ -x $binary ]] || { echo "build-image: $binary is not built (cmake --build $build_dir --target perimeter-runner)" >&2; exit 1; }

rootfs=$out_dir/rootfs
rm -rf "$out_dir"
mkdir -p "$rootfs"/{usr/local/bin,workspace,tmp,etc,bin,usr/bin}

source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/hack/images/lib/oci-rootfs.sh"

copy_program "$binary" /usr/local/bin/perimeter-runner
strip "$rootfs/usr/local/bin/perimeter-runner" 2>/dev/null || true
# What the bash tool and the agent's everyday commands need.
for program in bash sh cat ls echo test mkdir rm cp mv touch sleep head tail wc grep sed env \
               true false sort uniq tr cut find xargs tar unzip zipinfo gzip; do
  path=$(command -v "$program" || true)
  [[ -n $path && $path == /* ]] && copy_program "$path" "/bin/$program"
done
# A proxy-aware HTTP client for the agent's bash: curl honours HTTPS_PROXY/https_proxy and
# NO_PROXY, which the operator sets in gateway egress mode (docs/egress.md), so the agent's own
# commands reach allowed hosts through the egress gateway. Required: the real-node tests use it.
curl=$(command -v curl || true)
[[ -n $curl ]] || { echo "build-image: curl is not installed (hack/install-deps.sh installs it)" >&2; exit 1; }
copy_program "$curl" /usr/bin/curl
[[ -d /etc/ssl/certs ]] && mkdir -p "$rootfs/etc/ssl" && cp -rL /etc/ssl/certs "$rootfs/etc/ssl/" 2>/dev/null || true
printf 'root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/workspace:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"
chown 65532:65532 "$rootfs/workspace" 2>/dev/null || true

echo "build-image: rootfs at $rootfs ($(du -sh "$rootfs" | cut -f1))"

# Check: the binary starts in the rootfs as uid 65532. With no env contract it must refuse with
# exit 2 and a JSON-line error: that proves the loader, every library and the user are right.
check() {
  local status=0 output
  output=$("$@" 2>&1) || status=$?
  if [[ $status -ne 2 || $output != *'"msg":"cannot start"'* ]]; then
    echo "build-image: check failed (exit $status): $output" >&2
    return 1
  fi
}
if [[ $(id -u) -eq 0 ]] && command -v unshare >/dev/null && command -v chroot >/dev/null; then
  # A read-only root with writable /workspace and /tmp, as the operator's pod spec sets it.
  check unshare --mount --fork sh -c "
    mount --bind '$rootfs' '$rootfs' && mount -o remount,bind,ro '$rootfs' &&
    mount -t tmpfs tmpfs '$rootfs/workspace' && mount -t tmpfs tmpfs '$rootfs/tmp' &&
    exec chroot --userspec=65532:65532 '$rootfs' /usr/local/bin/perimeter-runner"
  echo "build-image: checked: starts as uid 65532 on a read-only root"
else
  echo "build-image: not root, so the chroot check is skipped; run as root to check" >&2
fi

pack_oci_archive "$out_dir" "$version" "$archive" --config.user 65532:65532 \
  --config.workingdir /workspace --config.env HOME=/workspace \
  --config.entrypoint /usr/local/bin/perimeter-runner
