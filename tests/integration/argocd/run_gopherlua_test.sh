#!/usr/bin/env bash
# ctest's argocd_health_gopherlua_test: the same samples as argocd_health_test, run in gopher-lua,
# the Lua VM Argo CD embeds, set up as Argo CD sets it up (gopherlua/main.go). gopher-lua comes
# from the Go module proxy (pinned in gopherlua/go.sum). Without Go the test fails; it never skips.
#   run_gopherlua_test.sh <repository root>
set -euo pipefail
root=${1:?usage: run_gopherlua_test.sh <repository root>}
if ! command -v go >/dev/null 2>&1; then
  echo "FAIL: go is not installed; Go 1.24 or newer runs gopher-lua (as for \`make tools\`)" >&2
  exit 1
fi
cd "$root/tests/integration/argocd/gopherlua"
go run -mod=readonly . "$root"
