#!/usr/bin/env bash
# Refreshes the upstream CRDs in tests/chart/upstream-crds/ (see its README) from the upstream repositories'
# tagged sources. Needs access to GitHub; the test suite itself never downloads them.
# Usage: scripts/refresh-crds.sh   (edit the versions below first; then update tests/chart/crds.py's CRD_FILES)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/tests/chart/upstream-crds"
GATEWAY_API=v1.6.1
ENVOY_GATEWAY=v1.9.0
TRAEFIK=v3.7.9
ISTIO=1.30.3
CONTOUR=v1.33.6
raw=https://raw.githubusercontent.com

fetch() {  # fetch OUTPUT-NAME REPO TAG PATH
  echo "fetching $2@$3:$4 -> $1" >&2
  curl -fsSL --retry 3 -o "$DEST/$1.tmp" "$raw/$2/$3/$4"
  mv "$DEST/$1.tmp" "$DEST/$1"
}

fetch "gateway-api-$GATEWAY_API-experimental-httproutes.yaml" kubernetes-sigs/gateway-api "$GATEWAY_API" \
  config/crd/experimental/gateway.networking.k8s.io_httproutes.yaml
fetch "gateway-api-$GATEWAY_API-standard-httproutes.yaml" kubernetes-sigs/gateway-api "$GATEWAY_API" \
  config/crd/standard/gateway.networking.k8s.io_httproutes.yaml
fetch "gateway-api-$GATEWAY_API-experimental-referencegrants.yaml" kubernetes-sigs/gateway-api "$GATEWAY_API" \
  config/crd/experimental/gateway.networking.k8s.io_referencegrants.yaml
fetch "envoy-gateway-$ENVOY_GATEWAY-securitypolicies.yaml" envoyproxy/gateway "$ENVOY_GATEWAY" \
  charts/gateway-helm/charts/crds/crds/generated/gateway.envoyproxy.io_securitypolicies.yaml
fetch "traefik-$TRAEFIK-crds.yaml" traefik/traefik "$TRAEFIK" \
  docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml
fetch "istio-$ISTIO-crds.yaml" istio/api "$ISTIO" kubernetes/customresourcedefinitions.gen.yaml
fetch "contour-$CONTOUR-crds.yaml" projectcontour/contour "$CONTOUR" examples/contour/01-crds.yaml
echo "done: now update CRD_FILES in tests/chart/crds.py and the table in $DEST/README.md" >&2
