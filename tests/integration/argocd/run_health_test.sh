#!/usr/bin/env bash
# ctest's argocd_health_test: Perimeter's Argo CD health checks run by Debian's Lua 5.4 over the
# samples in testdata/, and the argocd-cm snippet checked against the scripts. A missing
# interpreter fails the test; it never skips.
#   run_health_test.sh <repository root>
set -euo pipefail
root=${1:?usage: run_health_test.sh <repository root>}
lua=${PERIMETER_LUA:-/usr/bin/lua5.4}
if [ ! -x "$lua" ]; then
  echo "FAIL: $lua is missing; install Debian's lua5.4 (hack/install-deps.sh does)" >&2
  exit 1
fi
"$lua" "$root/tests/integration/argocd/health_test.lua" "$root"
# The committed snippet is byte for byte what render-snippet.sh makes of the scripts.
rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT
"$root/deploy/argocd/render-snippet.sh" "$rendered"
if ! diff -u "$root/deploy/argocd/argocd-cm-snippet.yaml" "$rendered"; then
  echo "FAIL: deploy/argocd/argocd-cm-snippet.yaml is stale:" \
    "run deploy/argocd/render-snippet.sh" >&2
  exit 1
fi
echo "argocd-cm-snippet.yaml matches the health scripts"
