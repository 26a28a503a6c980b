#!/usr/bin/env bash
# Installs the official Anthropic SDK (pinned by tests/conformance/package-lock.json) and the
# Node 22 it needs, for the conformance and runner differential tests that run the SDK's worker.
# Prints the install directory on its last line; `--check` only looks, never installs.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "${repo_root}/hack/setup/lib/npm-project.sh"
install_npm_project official-sdk "${repo_root}/tests/conformance" "${1:-}"
