#!/usr/bin/env bash
# ctest's argocd_snippet_kubectl_test: kubectl (the pinned one of `make tools`) applies
# deploy/argocd/argocd-cm-snippet.yaml as the merge patch docs/argocd.md tells users to run, to an
# argocd-cm with a key of its own, locally; the patched ConfigMap must hold each health.lua byte for
# byte and keep its own key. Lua 5.4 compares. Missing kubectl or lua5.4 fails the test.
#   snippet_kubectl_test.sh <repository root>
set -euo pipefail
root=${1:?usage: snippet_kubectl_test.sh <repository root>}
tools=${PERIMETER_TOOLS_BIN:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/perimeter/tools/bin}
kubectl=$tools/kubectl
lua=${PERIMETER_LUA:-/usr/bin/lua5.4}
[ -x "$kubectl" ] || { echo "FAIL: kubectl not found at $kubectl: run \`make tools\`" >&2; exit 1; }
[ -x "$lua" ] || { echo "FAIL: $lua is missing; install Debian's lua5.4" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/argocd-cm.yaml" <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
data:
  url: https://argocd.example.com
YAML
KUBECONFIG=/dev/null "$kubectl" patch --local -f "$work/argocd-cm.yaml" --type merge \
  --patch-file "$root/deploy/argocd/argocd-cm-snippet.yaml" -o json > "$work/patched.json"
"$lua" "$root/tests/integration/argocd/health_test.lua" "$root" "$work/patched.json"
