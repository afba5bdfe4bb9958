"""The CEL context (what `when` sees), its documentation, the reference scanner and globs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from celgate.policy import Principal, RequestInfo, ToolCall
from celgate.policy.context import (
    FIELDS,
    PER_CALL_FIELDS,
    ROOTS,
    principal_value,
    principal_variables,
    read_arguments,
    request_reader,
    request_variables,
    tool_variables,
    whole_document,
)
from celgate.policy.globs import GlobList, glob
from celgate.policy.references import scan


def test_principal_variables() -> None:
    assert principal_variables(Principal("a", {"team": "t", "id": "spoofed"})) == {"id": "a", "team": "t"}


def test_request_variables() -> None:
    info = RequestInfo(
        model="m",
        agent=None,
        stream=True,
        path="/v1/chat/completions",
        headers={"x-a": "1"},
        tools=("t1",),
        scalars={"max_tokens": 5, "model": "spoofed"},
        user="u",
        metadata={"k": "v"},
    )
    assert request_variables(info) == {
        "model": "m",
        "agent": "",
        "stream": True,
        "path": "/v1/chat/completions",
        "headers": {"x-a": "1"},
        "tools": ["t1"],
        "tool_definitions": [],
        "method": "POST",
        "max_tokens": 5,
        "user": "u",
        "metadata": {"k": "v"},
    }
    bare = RequestInfo("m", "labs/x", False, "/p", {}, (), {})
    variables = request_variables(bare)
    assert variables["agent"] == "labs/x" and "user" not in variables and "metadata" not in variables


@pytest.mark.parametrize(
    ("raw", "kind", "expected", "problem"),
    [
        ('{"a": 1}', "function", {"a": 1}, None),
        ("", "function", {}, None),
        ("free text", "custom", {}, None),
        ('{"big": 123456789012345678901234567890}', "function", {"big": 1.2345678901234568e29}, None),
        ("[1]", "function", {}, "a JSON list, not an object"),
        ('"text"', "function", {}, "a JSON str, not an object"),
        ("null", "function", {}, "a JSON null, not an object"),
        ("not json", "function", {}, "Expecting value"),
        ('{"a": 1, "a": 2}', "function", {}, "duplicate key 'a'"),
        ('{"a": 1} {"a": 2}', "custom", {}, "Extra data"),
        ('{"a": NaN}', "function", {}, "NaN is not JSON"),
        ('{"a": "\\udc00"}', "function", {}, "a lone surrogate"),
        ("free \udc00 text", "custom", {}, "a lone surrogate"),
        ("[" * 100_000, "function", {}, "nested too deeply"),
    ],
)
def test_read_arguments(raw: str, kind: str, expected: dict[str, object], problem: str | None) -> None:
    assert read_arguments(raw, kind) == (expected, problem)


def test_tool_variables() -> None:
    tool = ToolCall("get_weather", '{"location": "Paris"}', "call_9", "agent")
    assert tool_variables(tool) == {
        "name": "get_weather",
        "arguments": {"location": "Paris"},
        "raw_arguments": '{"location": "Paris"}',
        "id": "call_9",
        "source": "agent",
        "type": "function",
        "server": "",
    }
    mcp = ToolCall("docs_search", "{}", "call_1", "mcp", server="docs")
    assert (tool_variables(mcp)["source"], tool_variables(mcp)["server"]) == ("mcp", "docs")


def test_every_builder_field_is_documented() -> None:
    documented = {f.path for f in FIELDS}
    info = RequestInfo("m", None, False, "/p", {}, (), {}, user="u", metadata={})
    for root, variables in (
        ("request", request_variables(info)),
        ("tool", tool_variables(ToolCall("n", "{}", "i", "s"))),
    ):
        assert {f"{root}.{key}" for key in variables} <= documented
    assert {
        ("request", "headers"),
        ("request", "metadata"),
        ("tool", "arguments"),
        ("tool", "raw_arguments"),
        ("tool", "id"),
    } == PER_CALL_FIELDS


@pytest.mark.parametrize(
    ("value", "pattern", "expected"),
    [
        ("shell.exec", "shell*", True),
        ("Shell.exec", "shell*", False),
        ("labs/team/x-planner", "labs/*planner*", True),
        ("ResearchAgent", "*Agent", True),
        ("gpt-4o", "gpt-?o", True),
        ("gpt-4o", "gpt-[0-9]o", True),
        ("gpt-xo", "gpt-[!a-z]o", False),
        ("a\nb", "a*b", True),
        ("abc", "ab", False),
    ],
)
def test_globs(value: str, pattern: str, expected: bool) -> None:
    assert glob(value, pattern) is expected
    assert GlobList([pattern, "never-matches"]).matches(value) is expected


@pytest.mark.parametrize(
    ("source", "fields", "whole", "complete"),
    [
        (
            'principal.team == "a" && request.model.startsWith("g")',
            {("principal", "team"), ("request", "model")},
            set(),
            True,
        ),
        ('"principal.team" == "x" // principal.id', set(), set(), True),
        ('principal["team"] == "a"', set(), {"principal"}, True),
        ("size(tool) > 1", set(), {"tool"}, True),
        ('now.getHours("UTC") > 1', set(), set(), True),  # a clock read (References.clock)
        ('now > timestamp("2026-01-01T00:00:00Z")', set(), {"now"}, True),
        ("request.tools.exists(tool, tool == 'x')", {("request", "tools")}, set(), True),
        ("request.`odd-name` == 1", set(), set(), False),
    ],
)
def test_scan(source: str, fields: set[tuple[str, str]], whole: set[str], complete: bool) -> None:
    refs = scan(source, ROOTS)
    assert (set(refs.fields), set(refs.whole), refs.complete) == (fields, whole, complete)
    if not complete:
        assert refs.reads("tool", "arguments") and refs.reads("now")


def test_scan_functions_and_regexes() -> None:
    refs = scan(
        r'tool.name.matches("^a\\.b") && matches(x, r"\d") && [1].map(v, v > 0, v) == [1] && size("a") > 0', ROOTS
    )
    assert refs.functions == {"matches", "map", "size"}
    assert refs.global_calls == {"matches", "size"}
    assert ("map", 3) in refs.calls and ("size", 1) in refs.calls
    assert refs.regexes == ("^a\\.b",)


@pytest.mark.parametrize(
    "info",
    [
        RequestInfo("m", None, False, "/p", {"x-a": "1"}, ("t",), {"max_tokens": 5, "model": "shadowed"}),
        RequestInfo("m", None, False, "/p", {}, (), {"max_tokens": 5, "max_output_tokens": 9.5}),
        RequestInfo("m", None, False, "/p", {}, (), {"max_tokens": "five"}),
        RequestInfo("m", "ag", True, "/p", {}, (), {"metadata": "a string", "n": None}, user="u", metadata=None),
        RequestInfo("m", None, False, "/p", {}, (), {}, user=None, metadata={"k": "v"}, tool_definitions=({"a": 1},)),
    ],
)
def test_one_request_field_reads_as_the_whole_map_does(info: RequestInfo) -> None:
    """Cached rules' keys read single fields; they must be the values the CEL activation holds."""
    variables = request_variables(info)
    missing = object()
    for name in [*variables, "user", "metadata", "absent", "max_tokens", "n"]:
        assert request_reader(name, missing)(info) == variables.get(name, missing), name
    principal = Principal("p1", {"team": "a", "id": "not-the-id", "roles": ["x"]})
    for name in ["id", "team", "roles", "absent"]:
        assert principal_value(principal, name, missing) == principal_variables(principal).get(name, missing), name


_JSONISH = st.text(alphabet=st.sampled_from(' \t\n\r\x0b\u00a0{}[]":,01-.eEtrufalsnNI\\ab'), max_size=16)


@given(_JSONISH)
def test_whole_document_reads_as_json_decoder_decode_reads(text: str) -> None:
    """The hot-path reader gives ``decode``'s value, or its error with the same message."""
    decoder = json.JSONDecoder()
    expected: Any
    try:
        expected = ("value", decoder.decode(text))
    except ValueError as exc:
        expected = ("error", str(exc))
    try:
        got: Any = ("value", whole_document(decoder)(text))
    except ValueError as exc:
        got = ("error", str(exc))
    assert got == expected
