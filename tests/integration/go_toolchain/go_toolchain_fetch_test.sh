#!/usr/bin/env bash
# The machine's real go asked for the pinned toolchain (GOTOOLCHAIN=<GO_TOOLCHAIN_VERSION>, the go
# command's own mechanism, which fetches it from the Go module proxy into the module cache when
# the machine's Go is another version) reports that version, and so does `hack/tools/go.sh`, the
# way `make deps` and `make tools` run go.
set -uo pipefail

src=${1:?usage: go_toolchain_fetch_test.sh SOURCE_DIR}
pinned=$(env -u GO_TOOLCHAIN_VERSION bash -c "source '$src/hack/tools/versions.env' && echo \$GO_TOOLCHAIN_VERSION")
passed=0 failed=0
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }

if ! command -v go >/dev/null; then
  echo "FAIL: no go on PATH; hack/install-deps.sh (make deps) says what to install"
  echo "0 passed, 1 failed"
  exit 1
fi
echo "go on PATH: $(command -v go), $(cd / && GOTOOLCHAIN=local go version)"

out=$(cd / && GOTOOLCHAIN="$pinned" go version 2>&1)
if [[ $out == "go version $pinned "* ]]; then passed=$((passed + 1)); else
  fail "GOTOOLCHAIN=$pinned go version said: $out"
fi
out=$(env -u GOTOOLCHAIN "$src/hack/tools/go.sh" version 2>&1)
local_version=$(cd / && GOTOOLCHAIN=local go version | awk '{print $3}')
# go.sh runs the machine's go when it is the pinned version or newer, the pinned one otherwise.
want=$pinned
[ "$(printf '%s\n%s\n' "${local_version#go}" "${pinned#go}" | sort -V | head -n 1)" = "${pinned#go}" ] &&
  want=$local_version
if [[ $out == "go version $want "* ]]; then passed=$((passed + 1)); else
  fail "hack/tools/go.sh version said '$out', not go version $want"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
