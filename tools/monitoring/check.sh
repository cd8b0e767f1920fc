#!/usr/bin/env bash
# Checks tools/monitoring with Debian's promtool (the prometheus package) and
# jq; CI runs it as the CTest test monitoring.check:
#   - kvtier.rules.yml is valid (promtool check rules) and computes what
#     kvtier.rules.test.yml says (promtool test rules);
#   - grafana-dashboard.json is JSON with a panel per target and a query in each.
# That the rules and the dashboard read only series kvtierd exports is tested
# against a real kvtierd by OpsSurfaceTest.MonitoringRulesAndDashboardReadOnlySeriesKvtierdExports.
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for tool in promtool jq; do
  command -v "$tool" >/dev/null ||
    { echo "tools/monitoring/check.sh: $tool not found (tools/deps.sh installs it)" >&2; exit 1; }
done
cd "$dir"
promtool check rules kvtier.rules.yml
promtool test rules kvtier.rules.test.yml
# Every target of every panel has a non-empty query and a refId unique in its panel.
jq -e '
  [.panels[] | select(.type != "row")] as $p
  | ($p | length) > 0
    and all($p[]; (.targets | length) > 0
                  and all(.targets[]; (.expr | type) == "string" and (.expr | length) > 0)
                  and ([.targets[].refId] | length) == ([.targets[].refId] | unique | length))
' grafana-dashboard.json >/dev/null ||
  { echo "tools/monitoring/check.sh: grafana-dashboard.json has a panel without a query" >&2; exit 1; }
echo "tools/monitoring/check.sh: rules and dashboard check out"
