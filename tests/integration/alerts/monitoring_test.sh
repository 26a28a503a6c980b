#!/usr/bin/env bash
# The chart's alerts and Grafana dashboard, tested with the real tools. One check per ctest test:
#   rules   promtool check rules and promtool test rules on charts/perimeter/files/alerts.yaml;
#           every alert has a case where it fires and one where it does not, a summary, a
#           description and a runbook_url to its own section of docs/runbook.md.
#   names   every metric the dashboard's queries and the alerts' expressions name is one the C++
#           sources register (read from the tree now, so a renamed metric fails here); the
#           dashboard is valid JSON with what Grafana needs, and each query parses as PromQL.
#   render  helm template with the opt-ins on: the PrometheusRule's spec passes promtool (check
#           and the same unit tests), the overrides of values.yaml apply, the dashboard ConfigMap
#           carries the sidecar label and the dashboard byte for byte; off by default.
# A missing tool fails the test, naming what installs it.
set -euo pipefail

check=${1:?usage: monitoring_test.sh rules|names|render}
src=${PERIMETER_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}
here="$src/tests/integration/alerts"
chart="$src/charts/perimeter"
alerts="$chart/files/alerts.yaml"
dashboard="$chart/files/dashboard.json"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

need_promtool() {
  promtool=${PROMTOOL:-promtool}
  command -v "$promtool" >/dev/null 2>&1 ||
    fail "promtool not found: Debian's prometheus package has it (hack/install-deps.sh, run by make test)"
}

# The alert names of a rule file, one a line.
alert_names() {
  sed -nE 's/^[[:space:]]*-?[[:space:]]*alert:[[:space:]]*([A-Za-z0-9_]+).*/\1/p' "$1"
}

# Every expr of a rule file, each on one line (block scalars joined).
rule_exprs() {
  awk '
    function flush() { if (inblk) { print buf; inblk = 0 } }
    /^[[:space:]]*expr:[[:space:]]*[|>][-+]?[[:space:]]*$/ {
      flush(); inblk = 1; ind = match($0, /[^ ]/); buf = ""; next
    }
    /^[[:space:]]*expr:/ { flush(); sub(/^[[:space:]]*expr:[[:space:]]*/, ""); print; next }
    inblk {
      if ($0 ~ /^[[:space:]]*$/) next
      if (match($0, /[^ ]/) <= ind) flush(); else { buf = buf " " $0; next }
    }
    END { flush() }
  ' "$1"
}

# The metric names a PromQL expression (one a line on stdin) refers to: what is left once
# strings, label matchers, ranges, Grafana variables, grouping label lists, numbers, function
# names and keywords are taken out.
metric_names_in() {
  sed -E '
    s/"([^"\\]|\\.)*"//g
    s/`[^`]*`//g
    s/\{[^}]*\}//g
    s/\[[^]]*\]//g
    s/\$\{[^}]*\}//g
    s/\$[A-Za-z_]+//g
    s/(^|[^A-Za-z0-9_:])(by|without|on|ignoring|group_left|group_right)[[:space:]]*\([^)]*\)/\1 /g
    s/(^|[^A-Za-z0-9_:])[0-9][0-9A-Za-z_.]*/\1 /g
    s/[A-Za-z_][A-Za-z0-9_]*[[:space:]]*\(/ (/g
    s/(^|[^A-Za-z0-9_:])(and|or|unless|bool|offset|group_left|group_right|Inf|NaN|inf|nan)([^A-Za-z0-9_:]|$)/\1 \3/g
    s/(^|[^A-Za-z0-9_:])(and|or|unless|bool|offset|group_left|group_right|Inf|NaN|inf|nan)([^A-Za-z0-9_:]|$)/\1 \3/g
  ' | grep -oE '[A-Za-z_:][A-Za-z0-9_:]*' || true
}

# The metric families the C++ sources register (prometheus-cpp's Build*().Name("...")), and which
# of them are histograms (their series add _bucket, _sum and _count) or summaries.
registered_metrics() {
  local dirs=() d
  for d in operator lib mcp-guard egress-gateway runner-image sim; do
    [ -d "$src/$d" ] && dirs+=("$src/$d")
  done
  mapfile -t sources < <(grep -rlE 'prometheus::Build(Counter|Gauge|Histogram|Summary|Info)' \
    --include='*.cc' --include='*.h' "${dirs[@]}" | grep -vE '/tests?/|_test\.cc$' | sort)
  [ "${#sources[@]}" -gt 0 ] || fail "no C++ source under $src registers a metric: is PERIMETER_SOURCE_DIR right?"
  grep -ohE '"perimeter_[a-z0-9_]+"' "${sources[@]}" | tr -d '"' | sort -u >"$work/registered"
  { grep -hA2 -E 'BuildHistogram\(\)' "${sources[@]}" || true; } | { grep -ohE '"perimeter_[a-z0-9_]+"' || true; } |
    tr -d '"' | sort -u >"$work/histograms"
  { grep -hA2 -E 'BuildSummary\(\)' "${sources[@]}" || true; } | { grep -ohE '"perimeter_[a-z0-9_]+"' || true; } |
    tr -d '"' | sort -u >"$work/summaries"
  [ -s "$work/registered" ] || fail "found no metric name in ${sources[*]}"
}

is_registered() {
  local name=$1 base
  grep -qxF "$name" "$work/registered" && return 0
  if [[ $name =~ ^(.+)_(bucket|sum|count)$ ]]; then
    base=${BASH_REMATCH[1]}
    if [ "${BASH_REMATCH[2]}" = bucket ]; then
      grep -qxF "$base" "$work/histograms" && return 0
    else
      grep -qxF "$base" "$work/histograms" "$work/summaries" && return 0
    fi
  fi
  return 1
}

# check_queries <what> <file of queries>: every query names at least one metric, and only
# registered ones. Prints the problems and returns non-zero when there is one.
check_queries() {
  local what=$1 file=$2 bad=0 query name names
  while IFS= read -r query; do
    [ -n "$query" ] || continue
    names=$(printf '%s\n' "$query" | metric_names_in | sort -u)
    if [ -z "$names" ]; then
      echo "  $what: names no metric: $query" >&2
      bad=1
      continue
    fi
    for name in $names; do
      if ! is_registered "$name"; then
        echo "  $what: '$name' is not a metric the sources register, in: $query" >&2
        bad=1
      fi
    done
  done <"$file"
  return $bad
}

run_rules() {
  need_promtool
  "$promtool" check rules "$alerts" || fail "promtool check rules $alerts"
  local tests=("$here"/*.test.yaml)
  [ -e "${tests[0]}" ] || fail "no promtool test files (*.test.yaml) in $here"
  (cd "$here" && "$promtool" test rules "${tests[@]##*/}") ||
    fail "promtool test rules: an alert of $alerts does not behave as its test says"
  # Every alert has a case where it fires and one where it does not.
  awk '
    /alertname:/ { name = $2 }
    /exp_alerts:[[:space:]]*\[\][[:space:]]*$/ { print name " quiet"; next }
    /exp_alerts:[[:space:]]*$/ { print name " fires" }
  ' "${tests[@]}" | sort -u >"$work/covered"
  local missing=0 alert kind
  for alert in $(alert_names "$alerts"); do
    for kind in fires quiet; do
      if ! grep -qxF "$alert $kind" "$work/covered"; then
        echo "  $alert has no promtool case where it $([ $kind = fires ] && echo fires || echo stays quiet)" >&2
        missing=1
      fi
    done
  done
  [ $missing = 0 ] || fail "alerts without a firing and a quiet case in $here/*.test.yaml"
  # Every alert's runbook_url is docs/runbook.md#<alert, lower case>, a section of the runbook.
  local runbook="$src/docs/runbook.md" url
  for alert in $(alert_names "$alerts"); do
    url=$(awk -v a="$alert" '$0 ~ "alert: " a "$" {f = 1} f && /runbook_url:/ {print $2; exit}' "$alerts")
    [ "$url" = "docs/runbook.md#${alert,,}" ] ||
      fail "$alert: runbook_url is '$url', not docs/runbook.md#${alert,,}"
    grep -qx "## $alert" "$runbook" || fail "$alert has no section '## $alert' in docs/runbook.md"
    for kind in summary description; do
      awk -v a="$alert" -v k="$kind" '$0 ~ "alert: " a "$" {f = 1; next} f && /- alert:/ {exit}
        f && $1 == k ":" {found = 1} END {exit !found}' "$alerts" ||
        fail "$alert has no $kind annotation"
    done
  done
  echo "PASS: $(alert_names "$alerts" | wc -l) alerts checked and unit-tested by promtool"
}

run_names() {
  registered_metrics
  # The checker itself must catch a name nobody registers, or it proves nothing.
  printf '%s\n' 'sum by (environment) (rate(perimeter_no_such_metric_total{environment=~"$environment"}[5m]))' \
    >"$work/canary"
  if check_queries canary "$work/canary" 2>/dev/null; then
    fail "the metric-name check accepts perimeter_no_such_metric_total: the checker is broken"
  fi
  cmake -DDASHBOARD="$dashboard" -DOUT="$work/dashboard.queries" \
    -P "$here/dashboard_queries.cmake" || fail "$dashboard is not a valid dashboard"
  [ -s "$work/dashboard.queries" ] || fail "$dashboard has no query"
  rule_exprs "$alerts" >"$work/alerts.queries"
  [ "$(wc -l <"$work/alerts.queries")" = "$(alert_names "$alerts" | wc -l)" ] ||
    fail "read $(wc -l <"$work/alerts.queries") expressions from $alerts for $(alert_names "$alerts" | wc -l) alerts"
  # Each dashboard query parses as PromQL: promtool checks it as a recording rule, with
  # Grafana's variables replaced by values Grafana would give them.
  need_promtool
  {
    echo "groups:"
    echo "  - name: dashboard"
    echo "    rules:"
    local n=0 query
    while IFS= read -r query; do
      n=$((n + 1))
      query=${query//\$__rate_interval/5m}
      query=${query//\$__range/6h}
      query=${query//\$environment/.*}
      echo "      - record: dashboard:query_$n"
      echo "        expr: '${query//\'/\'\'}'"
    done <"$work/dashboard.queries"
  } >"$work/dashboard-rules.yaml"
  "$promtool" check rules "$work/dashboard-rules.yaml" >"$work/dashboard-check.out" 2>&1 || {
    cat "$work/dashboard-check.out" >&2
    nl -ba "$work/dashboard.queries" >&2
    fail "a dashboard query is not valid PromQL (dashboard:query_N is query N of the list above)"
  }
  local bad=0
  check_queries "dashboard.json" "$work/dashboard.queries" || bad=1
  check_queries "alerts.yaml" "$work/alerts.queries" || bad=1
  [ $bad = 0 ] || fail "metric names above are used but not registered by the C++ sources (registered: $(tr '\n' ' ' <"$work/registered"))"
  echo "PASS: $(wc -l <"$work/dashboard.queries") dashboard queries and $(wc -l <"$work/alerts.queries") alert expressions use only the $(wc -l <"$work/registered") registered metrics"
}

# The rule file inside a rendered PrometheusRule: its spec, one level less indented.
rendered_rules() {
  sed -n '/^spec:/,$p' "$1" | tail -n +2 | sed 's/^  //'
}

run_render() {
  need_promtool
  local helm="${PERIMETER_TOOLS_BIN:-}/helm"
  [ -n "${PERIMETER_TOOLS_BIN:-}" ] && [ -x "$helm" ] ||
    fail "helm not found (PERIMETER_TOOLS_BIN='${PERIMETER_TOOLS_BIN:-}'): run through make test, or set PERIMETER_TOOLS_BIN to the output of hack/tools/build-tools.sh all"
  local tpl=("$helm" template perimeter "$chart" --namespace perimeter-system)

  # Off by default.
  "${tpl[@]}" >"$work/default.yaml" || fail "helm template with the defaults"
  if grep -qE '^kind: PrometheusRule|grafana_dashboard' "$work/default.yaml"; then
    fail "the default rendering has a PrometheusRule or a dashboard; both are opt-in"
  fi

  # On: the rendered rules are the file's, and pass the same tests.
  "${tpl[@]}" --set metrics.prometheusRule.enabled=true --set metrics.grafanaDashboard.enabled=true \
    >"$work/on.yaml" || fail "helm template with metrics.prometheusRule and metrics.grafanaDashboard enabled"
  "${tpl[@]}" --set metrics.prometheusRule.enabled=true \
    --show-only templates/prometheusrule.yaml >"$work/rule.yaml" || fail "helm template --show-only templates/prometheusrule.yaml"
  grep -qx 'apiVersion: monitoring.coreos.com/v1' "$work/rule.yaml" && grep -qx 'kind: PrometheusRule' "$work/rule.yaml" ||
    fail "the rendered object is not a monitoring.coreos.com/v1 PrometheusRule"
  rendered_rules "$work/rule.yaml" >"$work/rendered-alerts.yaml"
  "$promtool" check rules "$work/rendered-alerts.yaml" | tee "$work/check.out" ||
    fail "promtool check rules on the rendered PrometheusRule's spec"
  diff <(alert_names "$alerts") <(alert_names "$work/rendered-alerts.yaml") >/dev/null ||
    fail "the rendered PrometheusRule does not have the alerts of files/alerts.yaml"
  local t
  mkdir "$work/tests"
  for t in "$here"/*.test.yaml; do
    sed 's|^  - \.\./\.\./\.\./charts/perimeter/files/alerts\.yaml$|  - ../rendered-alerts.yaml|' "$t" >"$work/tests/${t##*/}"
    grep -q 'rendered-alerts.yaml' "$work/tests/${t##*/}" || fail "$t does not load ../../../charts/perimeter/files/alerts.yaml"
  done
  (cd "$work/tests" && "$promtool" test rules ./*.test.yaml) ||
    fail "promtool test rules against the rendered PrometheusRule"

  # The overrides of values.yaml.
  "${tpl[@]}" --show-only templates/prometheusrule.yaml \
    --set metrics.prometheusRule.enabled=true \
    --set metrics.prometheusRule.labels.release=kube-prometheus-stack \
    --set metrics.prometheusRule.ruleLabels.team=platform \
    --set metrics.prometheusRule.runbookBaseUrl=https://git.example.org/perimeter/blob/main/ \
    --set metrics.prometheusRule.alerts.PerimeterNoLeader.enabled=false \
    --set metrics.prometheusRule.alerts.PerimeterSessionsFailing.for=20m \
    --set metrics.prometheusRule.alerts.PerimeterSessionsFailing.severity=critical \
    >"$work/custom.yaml" || fail "helm template with the PrometheusRule's overrides"
  rendered_rules "$work/custom.yaml" >"$work/custom-alerts.yaml"
  "$promtool" check rules "$work/custom-alerts.yaml" >/dev/null || fail "promtool check rules with the overrides"
  alert_names "$work/custom-alerts.yaml" | grep -qx PerimeterNoLeader &&
    fail "alerts.PerimeterNoLeader.enabled=false left the alert in"
  [ "$(alert_names "$work/custom-alerts.yaml" | wc -l)" = "$(($(alert_names "$alerts" | wc -l) - 1))" ] ||
    fail "disabling one alert did not leave the others"
  sed -n '/^metadata:/,/^spec:/p' "$work/custom.yaml" | grep -qx '    release: kube-prometheus-stack' ||
    fail "metrics.prometheusRule.labels are not on the PrometheusRule"
  [ "$(grep -cx '          team: platform' "$work/custom.yaml")" = "$(alert_names "$work/custom-alerts.yaml" | wc -l)" ] ||
    fail "metrics.prometheusRule.ruleLabels are not on every alert"
  awk '/- alert: PerimeterSessionsFailing/,/- alert: PerimeterClaimsStalled/' "$work/custom.yaml" >"$work/sf.yaml"
  grep -qx '        for: 20m' "$work/sf.yaml" && grep -qx '          severity: critical' "$work/sf.yaml" ||
    fail "alerts.PerimeterSessionsFailing.for and .severity did not apply"
  grep -q 'runbook_url: https://git.example.org/perimeter/blob/main/docs/runbook.md#perimetersessionsfailing' "$work/sf.yaml" ||
    fail "runbookBaseUrl is not the base of runbook_url"
  "${tpl[@]}" --show-only templates/prometheusrule.yaml --set metrics.prometheusRule.enabled=true \
    --set leaderElection.enabled=false >"$work/noelection.yaml" || fail "helm template with leaderElection.enabled=false"
  rendered_rules "$work/noelection.yaml" >"$work/noelection-alerts.yaml"
  alert_names "$work/noelection-alerts.yaml" | grep -qx PerimeterNoLeader &&
    fail "leaderElection.enabled=false: no replica exports a lease, yet PerimeterNoLeader is rendered"
  alert_names "$work/noelection-alerts.yaml" | grep -qx PerimeterSessionsFailing ||
    fail "leaderElection.enabled=false dropped more than PerimeterNoLeader"
  if "${tpl[@]}" --set metrics.prometheusRule.enabled=true \
    --set metrics.prometheusRule.alerts.PerimeterNoSuchAlert.for=1m >/dev/null 2>"$work/err"; then
    fail "an override for an alert that does not exist was accepted"
  fi
  grep -q 'metrics.prometheusRule.alerts.PerimeterNoSuchAlert' "$work/err" ||
    fail "the error for an unknown alert does not name the value: $(cat "$work/err")"

  # The dashboard ConfigMap: the sidecar's label, the file's content unchanged.
  "${tpl[@]}" --set metrics.grafanaDashboard.enabled=true \
    --show-only templates/grafana-dashboard.yaml >"$work/dash.yaml" || fail "helm template --show-only templates/grafana-dashboard.yaml"
  grep -qx 'kind: ConfigMap' "$work/dash.yaml" && grep -qx '    grafana_dashboard: "1"' "$work/dash.yaml" ||
    fail "the dashboard ConfigMap does not carry grafana_dashboard: \"1\""
  sed -n '/^  perimeter.json: |-$/,$p' "$work/dash.yaml" | tail -n +2 | sed 's/^    //' >"$work/dash.json"
  diff <(cat "$work/dash.json") <(printf '%s\n' "$(cat "$dashboard")") >/dev/null ||
    fail "the ConfigMap's perimeter.json differs from files/dashboard.json"
  cmake -DDASHBOARD="$work/dash.json" -DOUT="$work/dash.queries" -P "$here/dashboard_queries.cmake" ||
    fail "the ConfigMap's perimeter.json is not a valid dashboard"
  "${tpl[@]}" --set metrics.grafanaDashboard.enabled=true --set metrics.grafanaDashboard.label=dashboards \
    --set metrics.grafanaDashboard.labelValue=perimeter --set metrics.grafanaDashboard.namespace=monitoring \
    --show-only templates/grafana-dashboard.yaml >"$work/dash2.yaml" || fail "helm template with the dashboard's label set"
  grep -qx '    dashboards: "perimeter"' "$work/dash2.yaml" && grep -qx '  namespace: monitoring' "$work/dash2.yaml" ||
    fail "metrics.grafanaDashboard.label, labelValue and namespace did not apply"
  echo "PASS: the chart renders the PrometheusRule and the dashboard only when asked, as tested"
}

case "$check" in
  rules) run_rules ;;
  names) run_names ;;
  render) run_render ;;
  *) fail "unknown check '$check' (rules, names or render)" ;;
esac
