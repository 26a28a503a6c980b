#!/usr/bin/env bash
# The images the local real node runs (pause, node-probe), built without a registry; cached.
set -euo pipefail
exec "$(cd "$(dirname "$0")/.." && pwd)/images/build-images.sh"
