#!/usr/bin/env bash
# Installs the Debian packages Perimeter builds and tests with, only those that are missing.
# Safe to run again: with everything present it prints nothing and does nothing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates openssl time
  libcpprest-dev libboost-dev libssl-dev nlohmann-json3-dev libyaml-cpp-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libpcre2-dev
  # The real node of the local cluster (localcluster/real_node.h) and its images (hack/images).
  containerd runc containernetworking-plugins iptables umoci
  # The runner image's proxy-aware HTTP client for the agent's bash (runner-image/build-image.sh).
  curl
  # kube-router's firewall (the real node's NetworkPolicy enforcer) matches pods by ip sets.
  ipset
  clang-format clang-tidy
  # perimeter-mcp-guard's fuzz target (clang's libFuzzer) and the reverse proxy its bench
  # measures it against.
  clang libclang-rt-14-dev nginx
  # The chart's alerts (promtool test rules, a real Prometheus scraping an e2e run) and the Argo CD
  # health checks (Lua, as Argo CD runs them).
  prometheus lua5.4
)
# Go builds the control-plane tools (`make tools`). Not from this list: bookworm's Go (1.19) is
# too old for them and for fetching a newer toolchain. hack/tools/go.sh uses the machine's Go when
# it is new enough, has one from Go 1.21 on (bookworm-backports has 1.23) fetch the pinned
# toolchain, here and once, or says what to install.
check_go() {
  "$(dirname "${BASH_SOURCE[0]}")/tools/go.sh" version >/dev/null
}

missing=()
# npm installs the official SDK the reference-peer tests run (and the Node 22 it needs). A
# machine may have Node.js from elsewhere (with npm inside it); only a missing command counts.
if ! command -v npm >/dev/null 2>&1; then missing+=(npm); fi
for p in "${packages[@]}"; do
  [ -n "$p" ] || continue
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  check_go
  exit
fi

echo "[deps] installing Debian packages: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/perimeter-apt.log 2>&1; then
  # A fresh machine has no package lists yet; update once and try again.
  $sudo apt-get update >>/tmp/perimeter-apt.log 2>&1 || true
  if ! $sudo apt-get install -y --no-install-recommends "${missing[@]}" >>/tmp/perimeter-apt.log 2>&1; then
    echo "[deps] ERROR: \`apt-get install ${missing[*]}\` failed; see /tmp/perimeter-apt.log" >&2
    tail -n 20 /tmp/perimeter-apt.log >&2
    exit 1
  fi
fi
check_go
