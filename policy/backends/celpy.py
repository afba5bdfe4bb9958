"""The pure-Python backend: ``cel-python`` (``celpy``) with its interpreted runner.

Selected with ``--cel-backend celpy``; 15-120x slower than cel-expr, so not
the default. Its compiled runner is not used: it is not thread-safe and raises
on ``!has(x)``. celpy checks names only at run time, so ``compile`` walks the
parse tree itself and rejects undeclared variables, as cel-expr's type checker
does. Activations are converted to celpy types up front (``json_to_cel``), one
variable at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import celpy
import lark
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

from ..errors import CelCompileError, CelEvalError
from ..globs import glob
from . import VARIABLES

__all__ = ["CelpyBackend", "CelpyProgram"]

_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_TYPE_NAMES = frozenset({"bool", "bytes", "double", "int", "list", "map", "null_type", "string", "type", "uint"})


def _glob(value: Any, pattern: Any) -> celtypes.BoolType:
    if not (isinstance(value, str) and isinstance(pattern, str)):
        raise TypeError("no matching overload for glob(value, pattern): both must be strings")
    return celtypes.BoolType(glob(value, pattern))


def _position(tree: lark.Tree[Any]) -> tuple[int, int] | None:
    meta = tree.meta
    return None if meta.empty else (meta.line, meta.column)


def _macro_variable(expr: lark.Tree[Any]) -> str:
    """The identifier a comprehension macro binds (``x`` in ``list.all(x, ...)``)."""
    node = expr
    while node.data != "ident" and len(node.children) == 1 and isinstance(node.children[0], lark.Tree):
        node = node.children[0]
    if node.data != "ident":
        raise CelCompileError("the first argument of a macro must be a variable name", _position(expr))
    return str(node.children[0])


def _check_names(tree: lark.Tree[Any], declared: frozenset[str], bound: frozenset[str] = frozenset()) -> None:
    """Reject references to names that are neither declared variables nor macro-bound."""
    if tree.data in ("ident", "dot_ident"):
        name = str(tree.children[0])
        if name not in declared and name not in bound and name not in _TYPE_NAMES:
            raise CelCompileError(f"undeclared reference to '{name}'", _position(tree))
        return
    children = [c for c in tree.children if isinstance(c, lark.Tree)]
    if tree.data == "member_dot_arg" and str(tree.children[1]) in _MACROS and len(children) == 2:
        member, arguments = children
        _check_names(member, declared, bound)
        first, *rest = arguments.children
        inner = bound | {_macro_variable(first)}
        for argument in rest:
            _check_names(argument, declared, inner)
        return
    for child in children:
        _check_names(child, declared, bound)


def _syntax_error(source: str, exc: CELParseError) -> CelCompileError:
    if exc.line is None or exc.column is None:
        return CelCompileError("Syntax error")
    rest = source.splitlines()[exc.line - 1][exc.column - 1 :][:20] if source.strip() else ""
    near = f"unexpected {rest!r}" if rest else "unexpected end of input"
    return CelCompileError(f"Syntax error: {near}", (exc.line, exc.column))


def _type_name(value: Any) -> str:
    return type(value).__name__.removesuffix("Type").lower()


def _to_cel(value: Any) -> Any:
    """Convert one variable; if celpy can't, the variable becomes an error value (as on cel-expr,
    where every read of a variable holding an unrepresentable value fails)."""
    try:
        return json_to_cel(value)
    except (ValueError, TypeError, OverflowError) as exc:
        return CELEvalError(f"cannot convert to CEL: {exc}")


class CelpyProgram:
    __slots__ = ("_runner",)

    def __init__(self, runner: celpy.Runner) -> None:
        self._runner = runner

    def decide(self, activation: Any) -> bool:
        try:
            result = self._runner.evaluate(activation)
        except CELEvalError as exc:
            raise CelEvalError(str(exc.args[0]) if exc.args else "evaluation error") from None
        except Exception as exc:  # celpy lets some Python errors escape (TypeError, ...): fail closed
            raise CelEvalError(f"{type(exc).__name__}: {exc}") from None
        if isinstance(result, CELEvalError):
            raise CelEvalError(str(result.args[0]) if result.args else "evaluation error")
        if isinstance(result, bool | celtypes.BoolType):
            return bool(result)
        raise CelEvalError(f"expression evaluated to {_type_name(result)}, not bool")


class CelpyBackend:
    name = "celpy"

    def __init__(self) -> None:
        self._env = celpy.Environment()

    def compile(self, source: str, variables: frozenset[str] = VARIABLES) -> CelpyProgram:
        try:
            tree = self._env.compile(source)
        except CELParseError as exc:
            raise _syntax_error(source, exc) from None
        _check_names(tree, variables)
        return CelpyProgram(self._env.program(tree, functions={"glob": _glob}))

    def activation(self, variables: Mapping[str, Any]) -> Any:
        return {name: _to_cel(value) for name, value in variables.items()}
