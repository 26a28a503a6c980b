#!/usr/bin/env bash
# The image the chart's `helm test` pod runs in the real-node test of the chart
# (e2e/real_node/helm_chart_real_node_test.cc): sh, curl, sed, grep and cat from this machine,
# built without a registry by hack/images/chart-test/build-image.sh, imported by the node as
# localhost/perimeter/chart-test:1.
#
# Output: $PERIMETER_CACHE_DIR/test-images (default ~/.cache/perimeter/test-images), beside the
# other test images and apart from the node images folder, whose every archive each real node
# imports. Cached by content: a second run does nothing. Prints the archive's path on its last
# line; `--check` only looks, never builds.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${PERIMETER_CACHE_DIR:-${HOME}/.cache/perimeter}/test-images"
mkdir -p "${out}"
if [[ "${1:-}" == "--check" ]]; then
  "${repo_root}/hack/images/chart-test/build-image.sh" "${out}" --check
else
  "${repo_root}/hack/images/chart-test/build-image.sh" "${out}"
fi
echo "${out}/chart-test.tar"
