#!/usr/bin/env bash
# gen-readme.sh writes charts/berth/README.md from values.yaml's "# --"
# comments and README.md.gotmpl with helm-docs (pinned in test/tools.sh).
# TestChartReadmeIsGenerated fails when the checked-in README differs.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
: "${BERTH_TOOLS:=$root/.tools}"
cd "$root/charts/berth"
"$BERTH_TOOLS/bin/helm-docs" --chart-search-root . --template-files README.md.gotmpl --output-file README.md --log-level warning
