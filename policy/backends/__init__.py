"""CEL backends: a thin interface over the CEL libraries.

A ``Backend`` compiles an expression once (``compile`` → ``Program``, raising
``CelCompileError`` with a position), builds one activation per decision
(``activation``), and a ``Program`` decides: ``True`` only for a real boolean
true; ``False`` for false; ``CelEvalError`` for anything else (runtime error,
non-boolean result). The evaluator turns errors into fail-closed outcomes.

Backends: ``cel-expr`` (default; Google's cel-cpp through ``cel-expr-python``,
type-checked at compile time, lazy activation) and ``celpy`` (pure Python
``cel-python``, interpreted runner; 15-120x slower).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import import_module
from typing import Any, Protocol

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "VARIABLES", "Backend", "Program", "get_backend"]

VARIABLES = frozenset({"principal", "request", "tool", "now"})
DEFAULT_BACKEND = "cel-expr"
BACKENDS: dict[str, tuple[str, str]] = {"cel-expr": ("celexpr", "CelExprBackend"), "celpy": ("celpy", "CelpyBackend")}


class Program(Protocol):
    def decide(self, activation: Any) -> bool:
        """True only when the expression evaluates to boolean true; raises ``CelEvalError``."""
        ...


class Backend(Protocol):
    name: str

    def compile(self, source: str, variables: frozenset[str] = VARIABLES) -> Program:
        """Compile once at load; ``variables`` are the names the expression may reference."""
        ...

    def activation(self, variables: Mapping[str, Any]) -> Any:
        """The per-decision activation shared by every program evaluated for it."""
        ...


@cache
def get_backend(name: str = DEFAULT_BACKEND) -> Backend:
    """The process-wide backend called ``name``; its CEL library is imported on first use."""
    if name not in BACKENDS:
        raise ValueError(f"unknown CEL backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name]
    backend: Backend = getattr(import_module(f".{module}", __name__), cls)()
    return backend
