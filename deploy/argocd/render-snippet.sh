#!/usr/bin/env bash
# Writes argocd-cm-snippet.yaml from the health.lua files next to it, so that the snippet and the
# scripts cannot drift: tests/integration/argocd checks that the committed snippet is what this
# renders. Usage: deploy/argocd/render-snippet.sh [output file, "-" for stdout]
set -euo pipefail
cd "$(dirname "$0")"
out=${1:-argocd-cm-snippet.yaml}
render() {
  echo "# Perimeter's Argo CD health checks, for the argocd-cm ConfigMap (docs/argocd.md)."
  echo "# Rendered from deploy/argocd/*/health.lua by deploy/argocd/render-snippet.sh; do not edit."
  echo "#   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file argocd-cm-snippet.yaml"
  echo "data:"
  local dir
  for dir in $(LC_ALL=C ls -d perimeter.dev_*/); do
    dir=${dir%/}
    echo "  resource.customizations.health.${dir}: |"
    # Four spaces in front of every line that has text; empty lines stay empty.
    sed 's/^\(.\)/    \1/' "$dir/health.lua"
  done
}
if [ "$out" = "-" ]; then
  render
else
  render > "$out"
fi
