#!/usr/bin/env bash
# The image the chart's `helm test` pod runs on the local real node, without any registry: the
# chart's default (curlimages/curl) cannot be pulled here, and its check needs only `sh`, `curl`,
# `sed`, `grep` and `cat` (charts/perimeter/templates/tests/operator-leading.yaml). This takes
# those programs from this machine (Debian's dash, curl, sed, grep, coreutils' cat) with every
# library they link (ldd), runs as uid 65532, and packs it with umoci as an OCI archive the node
# imports as localhost/perimeter/chart-test:1. e2e/real_node/helm_chart_real_node_test.cc points
# the chart's tests.image at it.
#   hack/images/chart-test/build-image.sh <out-dir> [--check]
# Cached by content: the programs', their libraries' and these scripts' hash; a second run with
# nothing changed does nothing. `--check` only looks: it fails when the archive is missing or
# stale. hack/setup/chart-test-image.sh (run by `make setup`) calls it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:?usage: build-image.sh <out-dir> [--check]}
mode=${2:-}
lib=$here/../lib/oci-rootfs.sh
programs=()
for program in sh curl sed grep cat; do
  path=$(command -v "$program" || true)
  [[ $path == /* ]] || { echo "[images] ERROR: $program is not installed (make deps installs it)" >&2; exit 1; }
  programs+=("$path")
done

archive="$out/chart-test.tar" stamp="$out/chart-test.sha256"
hash=$( { cat "$0" "$lib" "${programs[@]}";
          ldd "${programs[@]}" | awk '/=>/ { print $3 } /^[ \t]+\// { print $1 }' | sort -u |
            xargs -r cat; } | sha256sum | cut -d' ' -f1)
if [[ -f $archive && "$(cat "$stamp" 2>/dev/null)" == "$hash" ]]; then
  exit 0
fi
if [[ $mode == --check ]]; then
  echo "chart-test-image: $archive is missing or stale; run \`make setup\`" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp}
# shellcheck source=../lib/oci-rootfs.sh
source "$lib"
for path in "${programs[@]}"; do copy_program "$path" "/bin/$(basename "$path")"; done
printf 'root:x:0:0:root:/:/bin/sh\nnonroot:x:65532:65532:nonroot:/:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
chmod 1777 "$rootfs/tmp"

# Check: as uid 65532 on a read-only root, each program starts and a pipeline of them works (the
# script comes on stdin: nothing in the rootfs is writable, and it has no /dev).
cat >"$work/check.sh" <<'CHECK'
version=$(curl --version | sed -n 's/^curl \([0-9.]*\) .*/\1/p')
groups=$(cat /etc/group | grep -c nonroot)
echo "curl $version, $groups"
CHECK
chroot=$(command -v chroot || true)
if [[ $(id -u) -eq 0 && -n $chroot ]] && command -v unshare >/dev/null; then
  output=$(unshare --mount --fork sh -c "
    mount --bind '$rootfs' '$rootfs' && mount -o remount,bind,ro '$rootfs' &&
    exec env -i PATH=/bin $chroot --userspec=65532:65532 '$rootfs' /bin/sh -s" <"$work/check.sh" 2>&1) ||
    { echo "[images] ERROR: chart-test check failed: $output" >&2; exit 1; }
  [[ $output =~ ^curl\ [0-9]+\.[0-9.]+,\ 1$ ]] ||
    { echo "[images] ERROR: chart-test check printed: $output" >&2; exit 1; }
else
  echo "[images] not root, so the chart-test image's chroot check is skipped" >&2
fi

pack_oci_archive "$work/image" 1 "$archive" --config.entrypoint /bin/sh \
  --config.env PATH=/bin --config.user 65532:65532 --config.workingdir / >&2
echo "$hash" >"$stamp"
echo "[images] built $archive ($(stat -c %s "$archive") bytes)" >&2
