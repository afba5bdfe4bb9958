"""The LALR tables shipped in policy/cel_parser.json are those lark builds from the installed celpy grammar.

The expression analysis loads them instead of analysing the grammar at every start, which leaves ~2 MiB of RSS
behind (docs/performance.md). They are used only while the installed grammar's hash and lark's version match
theirs; this test fails as soon as either changes, so the file is regenerated rather than silently unused:
``CELGATE_WRITE_TABLES=1 .venv/bin/python -m pytest tests/policy/test_cel_parser_tables.py``.

lark numbers the parser's states and tokens in an order that changes from run to run (set iteration), so the
file numbers them canonically: the same grammar and lark always give the same file.
"""

from __future__ import annotations

import json
import os
from collections import deque
from typing import Any

import lark
import pytest
from lark.grammar import Rule
from lark.lexer import TerminalDef

from celgate.policy.references import _LOAD_OPTIONS, _TABLES, _build, _grammar, _parser, _read_tables, _tables_key
from tests.policy.test_policy_references import INCOMPLETE, READS

SHIFT = 0  # lark's serialized action codes: 0 shift (argument: a state), 1 reduce (argument: a rule)
Actions = dict[int, tuple[int, Any]]


def canonical(table: dict[str, Any]) -> dict[str, Any]:
    """lark's serialized LALR table, its states numbered breadth-first from the start and its tokens by name."""
    names: dict[int, str] = table["tokens"]
    states: dict[int, Actions] = table["states"]
    number: dict[int, int] = {}
    queue = deque(table["start_states"][start] for start in sorted(table["start_states"]))
    while queue:
        state = queue.popleft()
        if state not in number:
            number[state] = len(number)
            by_name = sorted(states[state].items(), key=lambda item: names[item[0]])
            queue.extend(argument for _, (action, argument) in by_name if action == SHIFT)
    assert len(number) == len(states), "a state no shift reaches: the numbering would not be canonical"
    index = {name: i for i, name in enumerate(sorted(names.values()))}

    def renumbered(actions: Actions) -> Actions:
        return dict(
            sorted(
                (index[names[token]], (action, number[argument] if action == SHIFT else argument))
                for token, (action, argument) in actions.items()
            )
        )

    return {
        "tokens": {i: name for name, i in index.items()},
        "states": dict(sorted((number[state], renumbered(actions)) for state, actions in states.items())),
        "start_states": {start: number[state] for start, state in table["start_states"].items()},
        "end_states": {start: number[state] for start, state in table["end_states"].items()},
    }


def tagged(value: Any) -> Any:
    """JSON for lark's tables: tuples and int-keyed dicts tagged, as ``references._untagged`` reads them back."""
    if isinstance(value, tuple):
        return {"__tuple__": [tagged(item) for item in value]}
    if isinstance(value, list):
        return [tagged(item) for item in value]
    if isinstance(value, dict):
        if value and all(isinstance(key, int) for key in value):
            return {"__int_keys__": [[key, tagged(item)] for key, item in value.items()]}
        assert not {"__tuple__", "__int_keys__"} & set(value)
        return {key: tagged(item) for key, item in value.items()}
    return value


def tables() -> tuple[dict[str, Any], dict[int, Any]]:
    """lark's serialized parser for the installed grammar, as the file holds it (without the load options)."""
    data, memo = _build(_grammar()).memo_serialize([TerminalDef, Rule])
    data["options"] = {name: value for name, value in data["options"].items() if name not in _LOAD_OPTIONS}
    data["parser"]["parser"] = canonical(data["parser"]["parser"])
    return data, memo


def test_the_shipped_tables_are_those_of_the_installed_grammar_and_lark() -> None:
    data, memo = tables()
    content = {**_tables_key(_grammar()), "data": tagged(data), "memo": tagged(memo)}
    expected = json.dumps(content, separators=(",", ":")) + "\n"
    if os.environ.get("CELGATE_WRITE_TABLES"):
        _TABLES.write_text(expected)
    assert _TABLES.read_text() == expected, "regenerate them: see this module's docstring"


def test_the_tables_read_back_as_lark_wrote_them() -> None:
    shipped = _read_tables(_grammar())
    assert shipped is not None
    assert (shipped["data"], shipped["memo"]) == tables()


def test_the_parser_from_the_tables_parses_as_the_one_from_the_grammar() -> None:
    built = _build(_grammar())
    sources = [case[0] for case in READS + INCOMPLETE[:-1]] + ["true || false == !true", "x.true", "1 +", "a ? b"]
    for source in sources:
        results = []
        for parser in (_parser(), built):
            try:
                results.append(parser.parse(source))
            except lark.exceptions.LarkError as exc:
                results.append((type(exc), getattr(exc, "line", None), getattr(exc, "column", None)))
        assert results[0] == results[1], source


def test_tables_for_another_grammar_or_lark_are_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _read_tables(_grammar()) is not None
    assert _read_tables(_grammar() + "\n") is None
    monkeypatch.setattr(lark, "__version__", "0.0.1")
    assert _read_tables(_grammar()) is None


def test_without_usable_tables_the_parser_is_built_from_the_grammar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lark, "__version__", "0.0.1")
    monkeypatch.delattr(lark.Lark, "_load_from_dict")  # the tables' loader is not called
    assert _parser.__wrapped__().parse("tool.name == 'x'") == _parser().parse("tool.name == 'x'")
