"""The package graph is the architecture: dependencies point one way, and every module says what it exports.

``proxy`` -> ``policy``, ``proxy`` -> ``adapters``, ``adapters`` -> ``policy``;
``policy`` imports neither, ``adapters`` never imports ``proxy``. Nothing but
``adapters`` imports the Agents SDK, and even there it is lazy (a plain proxy
never pays its ~1 s / ~90 MiB import).
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


def imported_packages(path: Path) -> set[str]:
    """Top-level names this module imports (absolute imports only; relative ones stay inside)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_one_way(package: str) -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(imported_packages(path) & FORBIDDEN[package]) for path in modules(package)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


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
        node for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in getattr(node, "targets", [getattr(node, "target", None)]))
    ]
    assert declared, f"{path.relative_to(REPO)} has no __all__"


def test_a_plain_proxy_does_not_import_the_agents_sdk() -> None:
    code = (
        "import sys; from pathlib import Path; from proxy import create_app; from proxy.settings import Settings;"
        "create_app(Settings(no_policy=True, agents=Path('/nonexistent')));"
        "print('agents' in sys.modules, 'openai' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
