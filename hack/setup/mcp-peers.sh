#!/usr/bin/env bash
# Installs the real MCP peers the mcp-guard integration tests run directly and through the guard
# (pinned by tests/mcp-peers/package-lock.json): the official TypeScript SDK client,
# @modelcontextprotocol/server-everything, the conformance suite @modelcontextprotocol/conformance,
# and the Node 22 they run on. Prints the install directory on its last line; `--check` only
# looks, never installs.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "${repo_root}/hack/setup/lib/npm-project.sh"

# The entry points the tests start must be there and load on the installed Node.
verify_mcp_peers() {
  local node_bin=$1 dir=$2
  local entry
  for entry in @modelcontextprotocol/server-everything/dist/index.js \
               @modelcontextprotocol/conformance/dist/index.js; do
    [[ -f "${dir}/node_modules/${entry}" ]] || { echo "mcp-peers: ${entry} is missing" >&2; return 1; }
  done
  (cd "${dir}" && "${node_bin}" --input-type=module -e \
    'await import("@modelcontextprotocol/sdk/client/index.js"); await import("@modelcontextprotocol/sdk/client/streamableHttp.js");') ||
    { echo "mcp-peers: the SDK's Streamable HTTP client does not load" >&2; return 1; }
}

install_npm_project mcp-peers "${repo_root}/tests/mcp-peers" "${1:-}" verify_mcp_peers
