#!/usr/bin/env bash
# Writes argocd-cm-snippet.yaml from the health.lua files under it, so that the snippet and the
# scripts cannot drift: tests/integration/argocd checks that the committed snippet is what this
# renders. Usage: deploy/argocd/render-snippet.sh [output file, "-" for stdout]
set -euo pipefail
cd "$(dirname "$0")"
out=${1:-argocd-cm-snippet.yaml}
render() {
  echo "# Perimeter's Argo CD health checks, for the argocd-cm ConfigMap (docs/argocd.md)."
  echo "# Rendered from deploy/argocd/perimeter.dev/*/health.lua by render-snippet.sh; do not edit."
  echo "#   kubectl -n argocd patch configmap argocd-cm --type merge \\"
  echo "#     --patch-file deploy/argocd/argocd-cm-snippet.yaml"
  echo "data:"
  local script kind
  # <group>/<kind>/health.lua, as in Argo CD's resource_customizations; the key is <group>_<kind>.
  for script in $(LC_ALL=C ls perimeter.dev/*/health.lua); do
    kind=${script#perimeter.dev/}
    kind=${kind%/health.lua}
    echo "  resource.customizations.health.perimeter.dev_${kind}: |"
    # Four spaces in front of every line that has text; empty lines stay empty.
    sed 's/^\(.\)/    \1/' "$script"
  done
}
if [ "$out" = "-" ]; then
  render
else
  render > "$out"
fi
