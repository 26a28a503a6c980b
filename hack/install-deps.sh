#!/usr/bin/env bash
# Installs the Debian packages Perimeter builds and tests with, only those that are missing.
# Safe to run again: with everything present it prints nothing and does nothing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates openssl time
  libcpprest-dev libboost-dev libssl-dev nlohmann-json3-dev libyaml-cpp-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev
  clang-format clang-tidy
)
# Go (for `make tools`) comes with the machine image: Debian's Go is too old for Kubernetes.

missing=()
for p in "${packages[@]}"; do
  [ -n "$p" ] || continue
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

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
