#!/usr/bin/env bash
# Renders the Helm chart into deploy/perimeter.yaml (CRDs included), for `kubectl apply -f` and for
# Argo CD or Flux pointed at this repository. `make manifests` runs it; a test fails when the
# committed file differs from what the chart renders.
set -euo pipefail
cd "$(dirname "$0")/.."
helm=${HELM:-$(hack/tools/build-tools.sh helm 2>/dev/null | tail -n 1)/helm}
out=${1:-deploy/perimeter.yaml}
{
  echo "# Perimeter, rendered from charts/perimeter by hack/render-manifests.sh. Do not edit by hand."
  echo "# kubectl create namespace perimeter-system && kubectl apply -f deploy/perimeter.yaml"
  echo "---"
  # One YAML document per CRD: the files carry no "---" of their own.
  first=true
  for crd in charts/perimeter/crds/*.yaml; do
    $first || echo "---"
    first=false
    cat "$crd"
  done
  # --skip-tests: the chart renders its `helm test` hooks by default, and a test pod in a file for
  # `kubectl apply` would be created and run as an ordinary pod.
  "$helm" template perimeter charts/perimeter --namespace perimeter-system --skip-tests
} > "$out"
