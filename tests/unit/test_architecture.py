"""docs/architecture.md against the code: every module has its room, imports never run in a circle, the wires
are peers that import nothing of each other, only the entry imports the composition root, and only the CLI and
watch mode import the Kubernetes package. Imports inside functions (the lazy ones) count like any other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.support.procs import REPO_ROOT

APP = REPO_ROOT / "app"
WIRES = {"app.http", "app.grpc_server", "app.health_server", "app.browser"}
ROOT = "app.service"
KUBE = "app.kube"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def app_imports() -> dict[str, set[str]]:
    """Each module of app/ -> the modules of app/ it imports (``from app import x`` names app.x when it is one)."""
    modules = {module_name(path): path for path in APP.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t not in (name, "app")}
    return graph


def test_every_module_of_app_has_a_room_on_the_architecture_page() -> None:
    page = (REPO_ROOT / "docs" / "architecture.md").read_text()
    rooms = page.split("## The rooms", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z_/]+(?:\.py|/))`", rooms))
    for path in APP.rglob("*.py"):
        relative = path.relative_to(APP)
        if relative.name in ("__init__.py", "__main__.py"):
            continue
        where = f"{relative.parts[0]}/" if len(relative.parts) > 1 else relative.name
        assert where in named, f"app/{relative} has no room in docs/architecture.md"


def test_imports_never_run_in_a_circle() -> None:
    graph = app_imports()
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join((*path[path.index(name) :], name)))
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, (*path, name))
        done.add(name)

    for name in sorted(graph):
        visit(name, ())


def test_the_wires_are_peers_and_only_the_entry_imports_the_composition_root() -> None:
    graph = app_imports()
    for wire in WIRES:
        assert not graph[wire] & (WIRES | {ROOT, "app.server", "app.granian_server"}), (wire, graph[wire])
    assert {name for name, targets in graph.items() if ROOT in targets} == {"app.server"}
    assert graph[ROOT] >= WIRES  # the root starts every wire (gRPC imported lazily, when asked for)


def test_only_the_cli_and_watch_mode_import_the_kubernetes_package() -> None:
    def in_kube(name: str) -> bool:
        return name == KUBE or name.startswith(KUBE + ".")

    graph = app_imports()
    importers = {name for name, targets in graph.items() if not in_kube(name) and any(map(in_kube, targets))}
    assert importers == {"app.cli", ROOT}, importers
    face = ast.parse((APP / "kube" / "__init__.py").read_text())
    assert not [node for node in ast.walk(face) if isinstance(node, ast.Import | ast.ImportFrom)]
