#!/usr/bin/env bash
# `make run`'s script, end to end: the local stack comes up, every example session gets its own
# runner pod and finishes, the summary names each one, and teardown leaves nothing running.
set -euo pipefail
repo=${PERIMETER_SOURCE_DIR:?}
export BUILD_DIR=${PERIMETER_BIN_DIR:?}/..
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if ! PERIMETER_RUN_EXIT=1 "$repo/hack/run-local" >"$out" 2>&1; then
  echo "hack/run-local failed:"; cat "$out"; exit 1
fi
cat "$out"
sessions=$(ls "$repo"/sim/scenarios/conformance/*.yaml | wc -l)
sessions=$((sessions * 2))
grep -q "^Summary: $sessions sessions, each served by its own runner pod$" "$out" ||
  { echo "FAIL: no summary line for $sessions sessions"; exit 1; }
succeeded=$(grep -c ' succeeded$' "$out" || true)
[ "$succeeded" -eq "$sessions" ] || { echo "FAIL: $succeeded of $sessions sessions succeeded"; exit 1; }
grep -q "everything stopped and removed" "$out" || { echo "FAIL: no teardown"; exit 1; }
dir=$(sed -n 's|.*kubectl --kubeconfig \(/[^ ]*\)/cluster/kubeconfig.*|\1|p' "$out" | head -n 1)
[ -n "$dir" ] && [ ! -e "$dir" ] || { echo "FAIL: $dir was left behind"; exit 1; }
if pgrep -f "$dir" >/dev/null; then echo "FAIL: processes of $dir still run:"; pgrep -af "$dir"; exit 1; fi
echo "1 passed, 0 failed"
