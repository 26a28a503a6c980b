#!/usr/bin/env bash
# hack/tools/go.sh with fake go commands that report a given version and record every call with
# its GOTOOLCHAIN. Each case runs `hack/tools/go.sh version` and `hack/tools/build-tools.sh etcd`
# (as `make deps` and `make tools` do) on a PATH holding that fake go and plain utilities only.
set -uo pipefail

src=${1:?usage: go_toolchain_choice_test.sh SOURCE_DIR}
pinned=$(env -u GO_TOOLCHAIN_VERSION bash -c "source '$src/hack/tools/versions.env' && echo \$GO_TOOLCHAIN_VERSION")
[[ $pinned =~ ^go1\.[0-9]+\.[0-9]+$ ]] || { echo "FAIL: GO_TOOLCHAIN_VERSION in versions.env is '$pinned'"; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
fail() { echo "FAIL: $case: $*"; failed=$((failed + 1)); }

# The utilities go.sh and build-tools.sh call, and no go.
utils="$tmp/utils"
mkdir -p "$utils"
for u in bash sh env cat dirname sort head tail sed grep awk mkdir rm ln install flock; do
  p=$(command -v "$u") || { echo "FAIL: $u is not on PATH"; exit 1; }
  ln -s "$p" "$utils/$u"
done

# fake_go DIR REPORTED: a go whose `go version` says REPORTED and that records each call as
# "GOTOOLCHAIN=<value> ARGS" in DIR/calls; anything but `version` fails, as a build would.
fake_go() {
  mkdir -p "$1"
  cat >"$1/go" <<FAKE
#!/bin/sh
echo "GOTOOLCHAIN=\${GOTOOLCHAIN-} \$*" >>"$1/calls"
if [ "\$1" = version ]; then echo "go version $2 linux/amd64"; exit 0; fi
exit 1
FAKE
  chmod +x "$1/go"
  : >"$1/calls"
}

# run NAME PATHDIRS [VAR=value...] -- CMD...: runs CMD with only PATHDIRS on PATH, a clean
# environment but for the variables given; stdout, stderr and exit code in $tmp/NAME.{out,err,rc}.
run() {
  local name=$1 path=$2
  shift 2
  local vars=()
  while [ "$1" != -- ]; do vars+=("$1"); shift; done
  shift
  env -i HOME="$tmp/home" PATH="$path" PERIMETER_CACHE="$tmp/cache-$name" "${vars[@]}" "$@" \
    >"$tmp/$name.out" 2>"$tmp/$name.err"
  echo $? >"$tmp/$name.rc"
}

install_msg="install Go 1.21 or newer (Debian bookworm: apt-get install -t bookworm-backports golang-go)"

# expect_refused CASE DIR MESSAGE: both entry points fail with exactly MESSAGE and run no go
# command beyond asking its version.
expect_refused() {
  local dir=$2 message=$3 entry
  for entry in go.sh build-tools.sh; do
    local cmd=("$src/hack/tools/go.sh" version)
    [ $entry = build-tools.sh ] && cmd=("$src/hack/tools/build-tools.sh" etcd)
    [ -f "$dir/calls" ] && : >"$dir/calls"
    run "$case-$entry" "$dir:$utils" -- "${cmd[@]}"
    [ "$(cat "$tmp/$case-$entry.rc")" != 0 ] || { fail "$entry exited 0"; continue; }
    [ "$(cat "$tmp/$case-$entry.err")" = "$message" ] ||
      { fail "$entry said '$(cat "$tmp/$case-$entry.err")', not '$message'"; continue; }
    if [ -f "$dir/calls" ] && grep -qv '^GOTOOLCHAIN=local version$' "$dir/calls"; then
      fail "$entry ran go beyond its version: $(grep -v '^GOTOOLCHAIN=local version$' "$dir/calls" | head -n 1)"
      continue
    fi
    passed=$((passed + 1))
  done
}

# expect_toolchain CASE DIR WANT [VAR=value...]: `go.sh version` runs `go version` with
# GOTOOLCHAIN=WANT, and build-tools.sh runs its first build command (etcd's `go get`) with it.
expect_toolchain() {
  local dir=$2 want=$3
  shift 3
  : >"$dir/calls"
  run "$case-go.sh" "$dir:$utils" "$@" -- "$src/hack/tools/go.sh" version
  if [ "$(cat "$tmp/$case-go.sh.rc")" != 0 ]; then
    fail "go.sh version exited $(cat "$tmp/$case-go.sh.rc"): $(cat "$tmp/$case-go.sh.err")"
  elif [ "$(tail -n 1 "$dir/calls")" != "GOTOOLCHAIN=$want version" ]; then
    fail "go.sh ran '$(tail -n 1 "$dir/calls")', not 'GOTOOLCHAIN=$want version'"
  else
    passed=$((passed + 1))
  fi
  : >"$dir/calls"
  run "$case-build-tools.sh" "$dir:$utils" "$@" -- "$src/hack/tools/build-tools.sh" etcd
  local get
  get=$(grep -m 1 ' get ' "$dir/calls")
  if [ -z "$get" ]; then
    fail "build-tools.sh ran no go get: $(cat "$tmp/$case-build-tools.sh.err")"
  elif [[ $get != "GOTOOLCHAIN=$want get go.etcd.io/etcd/server/v3@"* ]]; then
    fail "build-tools.sh ran '$get', not with GOTOOLCHAIN=$want"
  else
    passed=$((passed + 1))
  fi
}

case=no-go
expect_refused "$case" "$tmp/none" "[go] ERROR: no go on PATH; $install_msg, which fetches $pinned itself"

for v in go1.19.8 go1.20.14; do
  case=$v
  fake_go "$tmp/$v" "$v"
  expect_refused "$case" "$tmp/$v" "[go] ERROR: $tmp/$v/go is $v, too old to fetch $pinned; $install_msg"
done

case=no-version
fake_go "$tmp/noversion" "unknown"
expect_refused "$case" "$tmp/noversion" "[go] ERROR: \`$tmp/noversion/go version\` names no Go version; $install_msg"

# From Go 1.21 on, up to the pinned version: that exact toolchain, whatever the caller's GOTOOLCHAIN.
for v in go1.21.0 go1.22.2 go1.23.5; do
  case=$v
  fake_go "$tmp/$v" "$v"
  expect_toolchain "$case" "$tmp/$v" "$pinned"
done
case=go1.22.2-auto
expect_toolchain "$case" "$tmp/go1.22.2" "$pinned" GOTOOLCHAIN=auto
older=${pinned%.*}.0
if [ "$older" != "$pinned" ]; then
  case=$older
  fake_go "$tmp/$older" "$older"
  expect_toolchain "$case" "$tmp/$older" "$pinned"
fi

# The pinned version or newer: the go on PATH as it is, never a toolchain a module or the caller
# asks for.
minor=${pinned#go1.}
minor=${minor%%.*}
newer="go1.$((minor + 1)).3"
for v in "$pinned" "$newer"; do
  case=$v
  fake_go "$tmp/$v" "$v"
  expect_toolchain "$case" "$tmp/$v" local
done
case=$pinned-caller-toolchain
expect_toolchain "$case" "$tmp/$pinned" local GOTOOLCHAIN="$newer"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
