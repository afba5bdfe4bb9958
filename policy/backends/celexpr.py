"""The default backend: Google's cel-cpp through ``cel-expr-python`` (pinned ==0.1.3).

cel-cpp type-checks at compile time (undeclared names and functions, literal
type mismatches are load errors), converts activation values lazily, and
returns evaluation errors as values whose ``.value()`` is a truthy string:
``decide`` therefore accepts only a real ``True``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cel_expr_python import cel  # ships cel.pyi (mypy: ignore_missing_imports in pyproject)

from ..errors import CelCompileError, CelEvalError
from ..globs import glob
from . import VARIABLES

__all__ = ["CelExprBackend", "CelExprProgram"]

_MAP = cel.Type.Map(cel.Type.STRING, cel.Type.DYN)
_TYPES = {"principal": _MAP, "request": _MAP, "tool": _MAP, "now": cel.Type.TIMESTAMP}
_ERROR_LINE = re.compile(r"ERROR: <input>:(\d+):(\d+): ([^\n]*)")
_NOISE = re.compile(r" \(in container ''\)")


def _glob_decl() -> cel.FunctionDecl:
    overload = cel.Overload(
        "glob_string_string",
        return_type=cel.Type.BOOL,
        parameters=[cel.Type.STRING, cel.Type.STRING],
        impl=glob,
    )
    return cel.FunctionDecl("glob", [overload])


def _compile_error(text: str) -> CelCompileError:
    """cel-cpp reports ``ERROR: <input>:line:col: message`` lines; keep the messages and the first position."""
    found = _ERROR_LINE.findall(text)
    if not found:
        return CelCompileError(text.strip())
    line, column, _ = found[0]
    message = "; ".join(_NOISE.sub("", m) for _, _, m in found)
    return CelCompileError(message, (int(line), int(column)))


class CelExprProgram:
    __slots__ = ("_expr",)

    def __init__(self, expr: cel.Expression) -> None:
        self._expr = expr

    def decide(self, activation: Any) -> bool:
        try:
            value = self._expr.eval(activation)
        except RuntimeError as exc:  # a value cel-cpp cannot convert (text that is not UTF-8): fail closed
            raise CelEvalError(f"cannot evaluate: {exc}") from None
        result = value.value()
        if result is True or result is False:
            return result
        kind = value.type()
        if kind == cel.Type.ERROR:
            raise CelEvalError(result)
        raise CelEvalError(f"expression evaluated to {kind.name().lower()}, not bool")


class CelExprBackend:
    """Programs and activations all come from one environment declaring every variable.

    A narrower variable set (request rules can't see ``tool``) is enforced by
    type-checking the source in a second environment as well; its programs are
    not used, because cel-cpp can't convert a timestamp in an activation of one
    environment for a program compiled in another until the activation's
    environment has compiled something itself.
    """

    name = "cel-expr"

    def __init__(self) -> None:
        self._functions = [_glob_decl()]
        self._envs: dict[frozenset[str], cel.Env] = {}
        self._full = self._env(VARIABLES)

    def _env(self, variables: frozenset[str]) -> cel.Env:
        env = self._envs.get(variables)
        if env is None:
            env = cel.NewEnv(variables={n: _TYPES[n] for n in variables}, functions=self._functions)
            self._envs[variables] = env
        return env

    def compile(self, source: str, variables: frozenset[str] = VARIABLES) -> CelExprProgram:
        try:
            if variables != VARIABLES:
                self._env(variables).compile(source)
            return CelExprProgram(self._full.compile(source))
        except RuntimeError as exc:
            raise _compile_error(str(exc)) from None

    def activation(self, variables: Mapping[str, Any]) -> Any:
        return self._full.Activation(variables)
