#!/usr/bin/env bash
# Chooses the Go that builds the control-plane tools, for `make deps` and `make tools` alike.
# - the go on PATH is GO_TOOLCHAIN_VERSION (versions.env) or newer: used as it is
#   (GOTOOLCHAIN=local);
# - it is Go 1.21 or newer but older than that: GOTOOLCHAIN=<GO_TOOLCHAIN_VERSION>, so the go
#   command fetches exactly that toolchain from the Go module proxy (golang.org/toolchain) into
#   its module cache, once, and runs it;
# - no go, or one older than 1.21 (which does not know GOTOOLCHAIN): one line saying what to
#   install, and failure.
#
# Sourced: `use_pinned_go` exports GOTOOLCHAIN, or prints that line and returns 1.
# Run: `hack/tools/go.sh ARGS...` runs `go ARGS...` with that toolchain (`hack/tools/go.sh version`).

go_sh_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$go_sh_dir/versions.env"

# go_version_ge A B: A >= B, for versions such as 1.19, 1.22.0, 1.26.8.
go_version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1)" = "$2" ]; }

use_pinned_go() {
  local pinned=${GO_TOOLCHAIN_VERSION#go} found="" out
  local install="install Go 1.21 or newer (Debian bookworm: apt-get install -t bookworm-backports golang-go)"
  if ! command -v go >/dev/null 2>&1; then
    echo "[go] ERROR: no go on PATH; $install, which fetches go$pinned itself" >&2
    return 1
  fi
  # The go on PATH itself, whatever GOTOOLCHAIN or a go.mod nearby asks for:
  # "go version go1.22.2 linux/amd64", "go version go1.19.8 linux/amd64", "... devel go1.27-abc ...".
  out=$(cd / && GOTOOLCHAIN=local go version 2>/dev/null) || true
  if [[ $out =~ go([0-9]+\.[0-9]+(\.[0-9]+)?) ]]; then found=${BASH_REMATCH[1]}; fi
  if [ -n "$found" ] && go_version_ge "$found" "$pinned"; then
    export GOTOOLCHAIN=local
  elif [ -n "$found" ] && go_version_ge "$found" 1.21; then
    export GOTOOLCHAIN="go$pinned"
  elif [ -n "$found" ]; then
    echo "[go] ERROR: $(command -v go) is go$found, too old to fetch go$pinned; $install" >&2
    return 1
  else
    echo "[go] ERROR: \`$(command -v go) version\` names no Go version; $install" >&2
    return 1
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  use_pinned_go
  exec go "$@"
fi
