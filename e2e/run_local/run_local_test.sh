#!/usr/bin/env bash
# `make run`'s script, end to end, in both of its modes:
#  - the real node (the default): every example session is served by perimeter-runner in its own
#    pod, every tool result the simulator records is the one its script expects, each result is
#    shown live, every pod succeeds, and teardown leaves no process, folder or bridge behind;
#  - KWOK's fake nodes (PERIMETER_RUN_NODE=kwok): every session gets its own pod, which finishes.
# In both, the example McpTunnel reaches Ready with its route resolved.
set -euo pipefail
repo=${PERIMETER_SOURCE_DIR:?}
export BUILD_DIR=${PERIMETER_BIN_DIR:?}/..
out=$(mktemp)
trap 'rm -f "$out"' EXIT
fail() { echo "FAIL ($mode): $*"; exit 1; }

# Runs hack/run-local; checks the summary, the pods' outcomes and the teardown.
run_and_check_common() {
  local sessions=$1 summary=$2 pods=$3
  if ! PERIMETER_RUN_EXIT=1 "$repo/hack/run-local" >"$out" 2>&1; then
    echo "hack/run-local failed ($mode):"; cat "$out"; exit 1
  fi
  cat "$out"
  grep -q "^Summary: $summary, each served by its own runner pod$" "$out" ||
    fail "no summary line for $summary"
  local succeeded
  succeeded=$(grep -c ' succeeded$' "$out" || true)
  [ "$succeeded" -eq "$pods" ] || fail "$succeeded of $pods runner pods succeeded"
  grep -q "everything stopped and removed" "$out" || fail "no teardown"
  # The example McpTunnel: a tunnel from the simulator's Tunnels API, its gateway Ready, its route
  # resolved to the Service.
  grep -q '^\[cluster\] mcptunnel tools/tickets: GatewayReady [0-9a-f]*\.tunnels\.sim\.local routes 1/1 connected 2$' "$out" ||
    fail "the example McpTunnel did not reach Ready"
  dir=$(sed -n 's|.*kubectl --kubeconfig \(/[^ ]*\)/cluster/kubeconfig.*|\1|p' "$out" | head -n 1)
  [ -n "$dir" ] && [ ! -e "$dir" ] || fail "$dir was left behind"
  if pgrep -f "$dir" >/dev/null; then pgrep -af "$dir"; fail "processes of $dir still run"; fi
}

mode=real
scenarios=$(ls "$repo"/sim/scenarios/conformance/*.yaml | grep -vc '/custom-tool.yaml$')
bridges_before=$(ip -o link show type bridge | grep -c ' pmtr' || true)
# Two copies of each, and of the two-turn session (two work items, two pods, one workspace).
sessions=$((scenarios * 2 + 2))
PERIMETER_RUN_NODE=real run_and_check_common "$sessions" \
  "$sessions sessions, $((sessions + 2)) work items" $((sessions + 2))
grep -q "^Every session got exactly the results its script expects.$" "$out" ||
  fail "the simulator did not get every scripted result"
# Every tool result was shown as it arrived, and every session as it finished.
[ "$(grep -c '^\[session\] .* results as scripted$' "$out")" -eq "$sessions" ] ||
  fail "not every session was shown finishing"
grep -q '^\[tool\] sesn_[0-9a-f]* builtin-tools step 7/8 bash -> "3"$' "$out" ||
  fail "the bash tool's result was not shown"
grep -q ' 127.0.0.1 .* succeeded$' "$out" || fail "no pod ran on the real node"
# Turn two of a two-turn session ran the tool turn one installed in the session's workspace.
grep -q '^\[tool\] sesn_[0-9a-f]* two-turns-workspace step 4/4 bash -> "greeting-from-turn-one"$' "$out" ||
  fail "no second turn found what the first left in the workspace"
bridges_after=$(ip -o link show type bridge | grep -c ' pmtr' || true)
[ "$bridges_after" -le "$bridges_before" ] || fail "the real node's bridge was left behind"

mode=kwok
all=$(ls "$repo"/sim/scenarios/conformance/*.yaml | wc -l)
PERIMETER_RUN_NODE=kwok PERIMETER_RUN_COPIES=1 run_and_check_common "$all" "$all sessions" "$all"
grep -q "NOTE: the nodes are KWOK's fake nodes" "$out" || fail "KWOK mode was not said plainly"

echo "2 passed, 0 failed"
