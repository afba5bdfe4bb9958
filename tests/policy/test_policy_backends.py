"""Both CEL backends behave alike: three outcomes (True / False / CelEvalError), same lint, glob()."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from celgate.policy import CelCompileError, CelEvalError
from celgate.policy.backends import BACKENDS, VARIABLES, get_backend

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
DATA: dict[str, Any] = {
    "principal": {"id": "p", "team": "search", "roles": ["dev"]},
    "request": {"model": "gpt-4o", "headers": {"x-team": "a"}},
    "tool": {"name": "shell.exec", "arguments": {"n": 3, "s": "abc"}},
    "now": NOW,
}


def decide(backend: str, source: str, data: dict[str, Any] = DATA) -> bool:
    engine = get_backend(backend)
    return engine.compile(source).decide(engine.activation(data))


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('principal.team == "search"', True),
        ('principal.team == "data"', False),
        ('glob(tool.name, "shell.*") && !glob(tool.name, "Shell*")', True),
        ('glob(request.model, "gpt-?o")', True),
        ('"x-team" in request.headers && !("x-other" in request.headers)', True),
        ("has(tool.arguments.n) && !has(tool.arguments.missing)", True),
        ("tool.arguments.n > 2 && size(tool.arguments.s) == 3", True),
        ('now.getHours("UTC") == 5 && now.getMinutes() == 6 && now > timestamp("2026-01-01T00:00:00Z")', True),
        ("type(tool.arguments.s) == string && type(tool.arguments.n) != string", True),
        ('tool.arguments.s.matches("^a.c$")', True),
        ("principal.nope == 1 || true", True),  # CEL absorbs errors in || and &&
        ("principal.nope == 1 && false", False),
    ],
)
def test_outcomes(backend: str, source: str, expected: bool) -> None:
    assert decide(backend, source) is expected


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize(
    "source",
    [
        "principal.nope == 1",  # missing field
        "tool.arguments.s > 3",  # type mismatch at run time
        "1 / (tool.arguments.n - 3) == 1",  # division by zero
        "principal.team",  # not a boolean: never a match
        "tool.arguments",
        'glob(tool.arguments.n, "3")',  # glob takes strings
        'tool.arguments.s.matches("(")',  # bad regex built at run time is still an error
    ],
)
def test_errors_raise(backend: str, source: str) -> None:
    with pytest.raises(CelEvalError) as caught:
        decide(backend, source)
    assert str(caught.value)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_compile_errors_carry_positions(backend: str) -> None:
    engine = get_backend(backend)
    with pytest.raises(CelCompileError) as caught:
        engine.compile('principal.team ==\n  == "x"')
    assert caught.value.position == (2, 3)
    with pytest.raises(CelCompileError) as caught:
        engine.compile("principal.x == 1", VARIABLES - {"principal"})
    assert "undeclared reference to 'principal" in caught.value.message
    assert caught.value.position is not None


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_programs_for_fewer_variables_share_the_activation(backend: str) -> None:
    """Request rules are compiled without `tool` but evaluated over the same activation (timestamps too)."""
    engine = get_backend(backend)
    program = engine.compile('now.getHours("UTC") == 5', VARIABLES - {"tool"})
    assert program.decide(engine.activation({"now": NOW, "principal": {}, "request": {}}))


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_value_cel_cannot_hold_fails_every_read_of_its_variable(backend: str) -> None:
    data = {**DATA, "request": {"model": "gpt-4o", "seed": 2**70}}
    with pytest.raises(CelEvalError):
        decide(backend, 'request.model == "gpt-4o"', data)
    assert decide(backend, 'principal.team == "search"', data)
