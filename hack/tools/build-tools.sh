#!/usr/bin/env bash
# Builds the pinned control-plane tools (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, kubelet, etcd, KWOK, Helm, kube-router, the real node's NetworkPolicy enforcer,
# kube-proxy, its service proxy, and CoreDNS, the binary of its cluster DNS image)
# from the Go module proxy into a cache outside the repository, keyed by version. A tool already
# in the cache is not rebuilt, so a second run does nothing.
#
# Prints the bin directory on the last line of stdout. Everything else goes to stderr.
# A tool that cannot be built fails with a message naming the tool and the command that failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache_root=${PERIMETER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/perimeter}
bin_dir="$cache_root/tools/bin"
mkdir -p "$bin_dir" "$cache_root/tools/src"

# The go on PATH if it is the pinned Go or newer, else the pinned toolchain fetched by an older go
# (go.sh); never a toolchain some module asks for. Builds are static.
# shellcheck source=go.sh
source "$here/go.sh"
use_pinned_go || exit 1
export CGO_ENABLED=0 GOFLAGS=-mod=mod

log() { printf '[tools] %s\n' "$*" >&2; }
fail() {
  printf '[tools] ERROR: could not build %s: `%s` failed (log: %s)\n' "$1" "$2" "$3" >&2
  tail -n 30 "$3" >&2 || true
  exit 1
}

# run_logged TOOL LOG CMD...: runs CMD, and on failure names the tool and the command.
run_logged() {
  local tool=$1 logfile=$2
  shift 2
  if ! "$@" >>"$logfile" 2>&1; then
    fail "$tool" "$*" "$logfile"
  fi
}

# Two builds at once (parallel `make test` runs on one machine) would share work folders: the
# second waits for the first, then finds everything cached.
if command -v flock >/dev/null; then
  exec 9>"$cache_root/tools/.lock"
  flock 9
fi

# A tool is installed as <name>-<version> with a stable symlink <name> pointing at it; the
# versioned file is the cache key.
have() { [ -x "$bin_dir/$1-$2" ]; }
link() { ln -sfn "$1-$2" "$bin_dir/$1"; }

# build_kubernetes [NAME...]: builds these commands of k8s.io/kubernetes (default: the control
# plane, kubectl and kubelet). kube-proxy is built on its own call, so adding it to a warm cache
# does not rebuild the others.
build_kubernetes() {
  local v=$K8S_VERSION minor
  local names=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet)
  [ $# -gt 0 ] && names=("$@")
  local missing=0 n
  for n in "${names[@]}"; do have "$n" "$v" || missing=1; done
  if [ $missing = 0 ]; then
    for n in "${names[@]}"; do link "$n" "$v"; done
    return
  fi
  log "building Kubernetes $v (${names[*]}); a cold build takes 10-25 minutes"
  local work="$cache_root/tools/src/kubernetes-$v-${names[0]}" logfile="$cache_root/tools/src/kubernetes-$v-${names[0]}.log"
  rm -rf "$work" && mkdir -p "$work" && : >"$logfile"
  # k8s.io/kubernetes maps its staging modules to local folders with `replace`, so `go install`
  # refuses it. A wrapper module requires it and points every staging module at its published tag.
  local gomod
  gomod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$v" 2>>"$logfile" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p') || true
  [ -n "$gomod" ] && [ -f "$gomod" ] || fail kubernetes "go mod download -json k8s.io/kubernetes@$v" "$logfile"
  minor=${v#v1.}
  minor=${minor%%.*}
  local staging_tag="v0.${v#v1.}"
  {
    echo "module perimeter.dev/tools/kubernetes"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//; s/^\([0-9]*\.[0-9]*\).*/\1/')"
    echo
    echo "require k8s.io/kubernetes $v"
    echo
    grep -E '^[[:space:]]*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" |
      awk -v tag="$staging_tag" '{print "replace " $1 " => " $1 " " tag}'
  } >"$work/go.mod"
  local pkgs=()
  for n in "${names[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$n"); done
  (cd "$work" && run_logged kubernetes "$logfile" go get "${pkgs[@]/%/@$v}" ) || exit 1
  local pkg_versions=(k8s.io/component-base/version k8s.io/client-go/pkg/version)
  local ldflags="-s -w" p
  for p in "${pkg_versions[@]}"; do
    ldflags+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$work/out"
  (cd "$work" && run_logged kubernetes "$logfile" go build -trimpath -ldflags "$ldflags" -o "$work/out/" "${pkgs[@]}") || exit 1
  for n in "${names[@]}"; do
    install -m 0755 "$work/out/$n" "$bin_dir/$n-$v"
    link "$n" "$v"
  done
  rm -rf "$work"
}

build_etcd() {
  local v=$ETCD_VERSION
  if have etcd "$v"; then link etcd "$v"; return; fi
  log "building etcd $v"
  local work="$cache_root/tools/src/etcd-$v" logfile="$cache_root/tools/src/etcd-$v.log"
  rm -rf "$work" && mkdir -p "$work" && : >"$logfile"
  # etcd's root module also uses local replaces; its server module exposes etcdmain.Main, which
  # is all the etcd binary is. Kept apart from Kubernetes: their gRPC versions differ.
  cat >"$work/main.go" <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  printf 'module perimeter.dev/tools/etcd\n\ngo 1.23\n' >"$work/go.mod"
  (cd "$work" && run_logged etcd "$logfile" go get "go.etcd.io/etcd/server/v3@$v") || exit 1
  (cd "$work" && run_logged etcd "$logfile" go mod tidy) || exit 1
  (cd "$work" && run_logged etcd "$logfile" go build -trimpath -ldflags "-s -w" -o "$bin_dir/etcd-$v" .) || exit 1
  link etcd "$v"
  rm -rf "$work"
}

# go_install TOOL VERSION PACKAGE: for modules that build with a plain `go install`.
go_install() {
  local name=$1 v=$2 pkg=$3
  if have "$name" "$v"; then link "$name" "$v"; return; fi
  log "building $name $v"
  local gobin="$cache_root/tools/src/$name-$v" logfile="$cache_root/tools/src/$name-$v.log"
  rm -rf "$gobin" && mkdir -p "$gobin" && : >"$logfile"
  GOBIN="$gobin" run_logged "$name" "$logfile" go install -trimpath -ldflags "-s -w" "$pkg@$v"
  install -m 0755 "$gobin/$name" "$bin_dir/$name-$v"
  link "$name" "$v"
  rm -rf "$gobin"
}

only=${1:-all}
case "$only" in
  all)
    build_etcd
    go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
    build_kubernetes
    go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm
    go_install kube-router "$KUBE_ROUTER_VERSION" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
    build_kubernetes kube-proxy
    go_install coredns "$COREDNS_VERSION" github.com/coredns/coredns
    ;;
  kube-proxy) build_kubernetes kube-proxy ;;
  coredns) go_install coredns "$COREDNS_VERSION" github.com/coredns/coredns ;;
  kubernetes) build_kubernetes ;;
  etcd) build_etcd ;;
  kwok) go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok ;;
  helm) go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm ;;
  kube-router) go_install kube-router "$KUBE_ROUTER_VERSION" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router ;;
  *) echo "usage: $0 [all|kubernetes|etcd|kwok|helm|kube-router|kube-proxy|coredns]" >&2; exit 2 ;;
esac
echo "$bin_dir"
