"""The chart as a package: lint, generated schema/README/manifests in step, Kubernetes schema validation."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.chart.render import CHART, PREFECT_VALUES, SCENARIOS, Render, helm
from tests.support.procs import REPO_ROOT
from tests.support.tools import require_tool

pytestmark = [pytest.mark.helm, pytest.mark.xdist_group("chart")]

Rendered = Callable[[str], Render]
# Custom resources kubernetes-validate has no schema for: those with an upstream CRD in tests/chart/upstream-crds are
# validated against it in test_gateway.py; ServiceMonitor's fields are asserted in test_render.py.
CRD_KINDS = {
    "ServiceMonitor",
    "Middleware",
    "HTTPRoute",
    "ReferenceGrant",
    "SecurityPolicy",
    "AuthorizationPolicy",
    "ExtensionService",
    "HTTPProxy",
}


@pytest.mark.parametrize("values", [[], ["-f", str(PREFECT_VALUES)]], ids=["defaults", "prefect"])
def test_helm_lint_strict(values: list[str]) -> None:
    result = helm("lint", "--strict", str(CHART), *values, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("kube_version", ["1.29.0", "1.37.0"])
def test_every_render_passes_kubernetes_validate_strict(rendered: Rendered, kube_version: str, tmp_path: Path) -> None:
    tool = require_tool("kubernetes-validate")
    files = [rendered(name).write(tmp_path) for name in sorted(SCENARIOS)]
    result = subprocess.run(
        [str(tool), "--strict", "-k", kube_version, *map(str, files)], capture_output=True, text=True, timeout=180
    )
    lines = result.stdout.splitlines()
    assert result.returncode == 0, "\n".join(line for line in lines if not line.startswith("INFO"))
    warnings = [line for line in lines if line.startswith("WARN")]
    assert all(any(f"kind {kind} " in w for kind in CRD_KINDS) for w in warnings), warnings
    passed = sum(1 for line in lines if line.startswith("INFO") and " passed " in line)
    expected = sum(1 for name in SCENARIOS for o in rendered(name).objects if o["kind"] not in CRD_KINDS)
    assert passed == expected


def test_values_schema_and_readme_table_are_generated_from_values_yaml() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "chart_docs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    readme = (CHART / "README.md").read_text()
    assert "| `ingress.api.websocketTimeoutSeconds` | integer | `3600` |" in readme


def test_every_values_key_is_documented(tmp_path: Path) -> None:
    """The generator refuses a key without a description (so the test above cannot pass on one)."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import chart_docs
    finally:
        sys.path.pop(0)
    chart = tmp_path / "authgate"
    chart.mkdir()
    (chart / "values.yaml").write_text((CHART / "values.yaml").read_text() + "undocumented: 1\n")
    (chart / "README.md").write_text((CHART / "README.md").read_text())
    with pytest.raises(chart_docs.ValuesDocError, match="undocumented has no '# --' description"):
        chart_docs.render(chart)


def test_manifests_are_the_chart_defaults() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "gen_manifests.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_manifests_build_with_kustomize(rendered: Rendered) -> None:
    out = subprocess.run(
        [str(require_tool("kubectl")), "kustomize", str(REPO_ROOT / "manifests")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    built = {(o["kind"], o["metadata"]["name"]) for o in yaml.safe_load_all(out) if o}
    defaults = Render.of("manifest-defaults", ["--set", "tests.enabled=false", "--skip-tests"])
    assert built == {(o["kind"], o["metadata"]["name"]) for o in defaults.objects}
    for o in yaml.safe_load_all(out):
        if o:
            assert o["metadata"]["namespace"] == "authgate"
            assert "app.kubernetes.io/managed-by" not in o["metadata"].get("labels", {})


def test_helm_package(tmp_path: Path) -> None:
    helm("package", str(CHART), "--destination", str(tmp_path))
    [package] = list(tmp_path.glob("authgate-*.tgz"))
    assert package.name == f"authgate-{yaml.safe_load((CHART / 'Chart.yaml').read_text())['version']}.tgz"
    with tarfile.open(package) as tgz:
        names = set(tgz.getnames())
    for member in (
        "values.yaml",
        "values.schema.json",
        "README.md",
        "templates/deployment.yaml",
        "templates/tests/test-auth.yaml",
        "dashboards/authgate.json",
        "examples/prefect-values.yaml",
        "examples/prefect-worker-values.yaml",
        "examples/prefect-worker.yaml",
    ):
        assert f"authgate/{member}" in names
    # The packaged chart renders like the directory.
    packaged = helm("template", "authgate", str(package), "--namespace", "prefect", "-f", str(PREFECT_VALUES))
    assert "nginx.ingress.kubernetes.io/auth-url" in packaged.stdout
