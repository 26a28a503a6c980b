#!/usr/bin/env bash
# Builds the images the local real node runs, without any registry: each is one static binary
# in an otherwise empty root filesystem, packed as an OCI layout with umoci and tarred as an OCI
# archive that `ctr images import` takes. The real node imports every archive in the output
# folder into its own containerd when it starts.
#
#   localhost/perimeter/pause:1        the sandbox image (containerd's sandbox_image)
#   localhost/perimeter/node-probe:1   prints what a container really gets (uid, caps, seccomp...)
#   localhost/perimeter/coredns:1      the node's cluster DNS (hack/images/coredns/build-image.sh)
#
# Output: $PERIMETER_IMAGES_DIR, else ~/.cache/perimeter/images. Cached by the sources' hash:
# a second run with nothing changed does nothing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${PERIMETER_IMAGES_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/perimeter/images}
mkdir -p "$out"

for tool in gcc umoci tar; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "[images] ERROR: $tool is not installed (make deps installs it)" >&2
    exit 1
  fi
done

# build_image <name> <source.c> <binary path in the image>
build_image() {
  local name=$1 source=$2 entrypoint=$3
  local archive="$out/$name.tar" stamp="$out/$name.sha256"
  local hash
  hash=$(cat "$here/$source" "$0" | sha256sum | cut -d' ' -f1)
  if [ -f "$archive" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ]; then
    return
  fi
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  gcc -static -Os -Wall -Wextra -Werror -o "$work/binary" "$here/$source"
  umoci init --layout "$work/layout"
  umoci new --image "$work/layout:1"
  umoci unpack --image "$work/layout:1" "$work/bundle" >/dev/null
  install -D -m 0755 "$work/binary" "$work/bundle/rootfs$entrypoint"
  umoci repack --image "$work/layout:1" "$work/bundle"
  umoci config --image "$work/layout:1" --config.entrypoint "$entrypoint" \
    --config.user 65532:65532 --os linux --architecture amd64
  umoci gc --layout "$work/layout"
  tar -C "$work/layout" -cf "$work/$name.tar" .
  mv "$work/$name.tar" "$archive"
  echo "$hash" >"$stamp"
  echo "[images] built $archive ($(stat -c %s "$archive") bytes)" >&2
}

build_image pause pause.c /pause
build_image node-probe node-probe.c /node-probe
"$here/coredns/build-image.sh" "$out"
