"""The package graph is the architecture: dependencies point one way, and every module says what it exports.

``celgate.proxy`` -> ``celgate.policy``, ``celgate.proxy`` -> ``celgate.adapters``,
``celgate.adapters`` -> ``celgate.policy``; ``policy`` imports neither,
``adapters`` never imports ``proxy``. Inside a package the module graph has no
cycles. Nothing but ``adapters`` imports the Agents SDK, and even there it is
lazy (a plain proxy never pays its ~1 s / ~90 MiB import). The source folders
install as ``celgate.*``: nothing imports them by their folder names.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("proxy", "policy", "adapters")
FORBIDDEN = {"policy": {"proxy", "adapters"}, "adapters": {"proxy"}, "proxy": set()}


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def absolute_imports(path: Path) -> set[str]:
    """Dotted names this module imports absolutely (relative imports stay inside its package)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def imported_packages(path: Path) -> set[str]:
    """The packages this module imports: ``celgate.X`` counts as ``X``, anything else by its top-level name."""
    names = set()
    for name in absolute_imports(path):
        parts = name.split(".")
        names.add(parts[1] if parts[0] == "celgate" and len(parts) > 1 else parts[0])
    return names


def sibling_imports(path: Path, package: str) -> set[str]:
    """Modules of the same package (``a``, ``backends.b``) that this module imports, lazily or not."""
    here = path.relative_to(REPO / package).with_suffix("").parts
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = here[: len(here) - node.level]
            module = [*base, *(node.module.split(".") if node.module else [])]
            candidates = [module] if node.module else [[*module, alias.name] for alias in node.names]
            names |= {".".join(c) for c in candidates if c}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(f"celgate.{package}."):
            names.add(node.module.removeprefix(f"celgate.{package}."))
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_one_way(package: str) -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(imported_packages(path) & FORBIDDEN[package]) for path in modules(package)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles_inside_a_package(package: str) -> None:
    """Package ``__init__`` modules re-export and are left out; every other edge counts, lazy ones too."""
    graph: dict[str, set[str]] = {}
    for path in modules(package):
        name = ".".join(path.relative_to(REPO / package).with_suffix("").parts)
        if not name.endswith("__init__"):
            graph[name] = {m for m in sibling_imports(path, package) if not m.endswith("__init__")}
    cycles = _cycles(graph)
    assert cycles == [], f"import cycles in {package}: {cycles}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("path", [p for pkg in PACKAGES for p in modules(pkg)], ids=lambda p: str(p.relative_to(REPO)))
def test_nothing_imports_a_source_folder_by_its_bare_name(path: Path) -> None:
    bare = {name for name in absolute_imports(path) if name.split(".")[0] in PACKAGES}
    assert bare == set(), f"import celgate.{{proxy,policy,adapters}}, not {sorted(bare)}"


@pytest.mark.parametrize("package", ("proxy", "policy"))
def test_only_adapters_knows_the_agents_sdk(package: str) -> None:
    users = [str(p.relative_to(REPO)) for p in modules(package) if "agents" in imported_packages(p)]
    assert users == []


@pytest.mark.parametrize("path", [p for pkg in PACKAGES for p in modules(pkg)], ids=lambda p: str(p.relative_to(REPO)))
def test_every_module_declares_its_exports(path: Path) -> None:
    if path.name in ("__main__.py",):
        return
    tree = ast.parse(path.read_text())
    declared = [
        node
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        and any(
            isinstance(t, ast.Name) and t.id == "__all__"
            for t in getattr(node, "targets", [getattr(node, "target", None)])
        )
    ]
    assert declared, f"{path.relative_to(REPO)} has no __all__"


def test_a_plain_proxy_imports_neither_the_agents_sdk_nor_the_policy_analysis() -> None:
    """Nor lark for the expression analysis and RE2 for ``matches`` literals (~4 MiB of RSS), which only a policy
    needs, nor importlib.metadata (~1 MiB), which only a drop-in's requirements need."""
    code = (
        "import sys; from pathlib import Path; from celgate.proxy import create_app;"
        "from celgate.proxy.settings import Settings;"
        "create_app(Settings(no_policy=True, agents=Path('/nonexistent')));"
        "print(*(name in sys.modules for name in ('agents', 'openai', 'lark', 're2', 'importlib.metadata')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"] * 5
