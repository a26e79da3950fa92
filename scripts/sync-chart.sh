#!/usr/bin/env bash
# Regenerates everything derived from the CRD and the chart, so the copies never drift:
#   charts/memoryguard/crds/memoryguard.yaml   <- crds/memoryguard.yaml (the source of truth)
#   deploy/memoryguard.yaml                    <- `helm template` of the chart, default values
#   docs/reference.md                          <- the CRD's OpenAPI schema
# tests/chart/ fails when any of them is out of date; `make chart-sync` runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
HELM=${HELM:-.tools/bin/helm}
PY=${PY:-.venv/bin/python}

cp crds/memoryguard.yaml charts/memoryguard/crds/memoryguard.yaml
"$PY" scripts/render_manifests.py --helm "$HELM" > deploy/memoryguard.yaml.tmp
mv deploy/memoryguard.yaml.tmp deploy/memoryguard.yaml
"$PY" scripts/gen_reference.py > docs/reference.md.tmp
mv docs/reference.md.tmp docs/reference.md
echo "sync-chart: crds copied, deploy/memoryguard.yaml and docs/reference.md regenerated"
