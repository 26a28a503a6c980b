#!/usr/bin/env bash
# Installs the Node side of the runner tool differential tests (the official SDK's agent toolset,
# pinned by tests/differential/package-lock.json, and the Node 22 it needs).
# Prints the install directory on its last line; `--check` only looks, never installs.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "${repo_root}/hack/setup/lib/npm-project.sh"
install_npm_project runner-differential "${repo_root}/tests/differential" "${1:-}"
