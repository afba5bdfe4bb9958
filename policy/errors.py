"""Errors raised by the policy engine.

::

    PolicyError                  base of everything below
     ├── PolicyLoadError         a policy set failed to load; ``problems`` lists every problem found
     ├── CelCompileError         one CEL expression does not compile (message, position)
     └── CelEvalError            one CEL evaluation failed at run time; the evaluator fails closed

Only ``policy/backends/*`` catch the CEL libraries' own exceptions; they
translate them into ``CelCompileError`` / ``CelEvalError``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CelCompileError", "CelEvalError", "PolicyError", "PolicyLoadError", "Problem"]


class PolicyError(Exception):
    """Base class of every policy engine error."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy set, located as precisely as the loader knows."""

    file: str
    line: int | None
    rule: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.rule}: {self.message}" if self.rule else f"{where}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        """JSON form, as ``PolicyStore.status()`` shows it."""
        return {"file": self.file, "line": self.line, "rule": self.rule, "message": self.message}


class PolicyLoadError(PolicyError):
    """A policy set did not load; ``str()`` is one ``file:line: rule: message`` per problem."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


class CelCompileError(PolicyError):
    """A CEL expression failed to parse, type-check or pass celgate's lint.

    ``position`` is the 1-based ``(line, column)`` inside the expression, when known.
    """

    def __init__(self, message: str, position: tuple[int, int] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


class CelEvalError(PolicyError):
    """A CEL evaluation failed (missing field, wrong type, non-boolean result, ...)."""
