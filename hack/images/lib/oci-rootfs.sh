# Sourced by the image scripts (runner-image/build-image.sh, mcp-guard/image/build-image.sh) that
# assemble a root filesystem without a Docker engine and pack it as an OCI archive a real node's
# containerd imports (`ctr images import`; localcluster/real_node.h). The caller sets `rootfs`.

# Copies a file to the same path under $rootfs, following links so the target is a real file.
copy_file() {
  local source=$1
  mkdir -p "$rootfs$(dirname "$source")"
  cp -L "$source" "$rootfs$source"
}

# A program and every library it links (from ldd), the dynamic loader included.
copy_program() {
  local program=$1 target=${2:-$1}
  mkdir -p "$rootfs$(dirname "$target")"
  cp -L "$program" "$rootfs$target"
  ldd "$program" | awk '/=>/ { print $3 } /^[ \t]*\// { print $1 }' | while read -r lib; do
    [[ -n $lib && -e $lib ]] && copy_file "$lib"
  done
}

# pack_oci_archive OUT_DIR VERSION ARCHIVE [umoci config flags...]
# Packs $rootfs as an OCI image layout in OUT_DIR/oci tagged VERSION, with the given image config
# (user, entrypoint, ...), and tars it to ARCHIVE, written beside and renamed so a reader never
# sees half an archive. Needs umoci.
pack_oci_archive() {
  local out_dir=$1 version=$2 archive=$3
  shift 3
  command -v umoci >/dev/null ||
    { echo "build-image: umoci is not installed (make deps installs it)" >&2; return 1; }
  local layout=$out_dir/oci bundle=$out_dir/bundle
  umoci init --layout "$layout"
  umoci new --image "$layout:$version"
  umoci unpack --rootless --image "$layout:$version" "$bundle" >/dev/null
  cp -a "$rootfs/." "$bundle/rootfs/"
  umoci repack --image "$layout:$version" "$bundle"
  umoci config --image "$layout:$version" "$@" \
    --os linux --architecture "$(dpkg --print-architecture 2>/dev/null || echo amd64)"
  umoci gc --layout "$layout"
  rm -rf "$bundle"
  echo "build-image: OCI image layout at $layout (tag $version)"

  mkdir -p "$(dirname "$archive")"
  tar -C "$layout" -cf "$archive.partial" .
  mv "$archive.partial" "$archive"
  echo "build-image: OCI archive at $archive ($(du -h "$archive" | cut -f1)); a real node imports it as localhost/perimeter/$(basename "$archive" .tar):$version"
}
