"""References from the parse tree: the cases a token scan gets wrong, and what follows at load and run time."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from celgate.policy import ANONYMOUS, Point, PolicyLoadError, Principal, ToolCall, load_policies
from celgate.policy.backends import BACKENDS
from celgate.policy.cli import build_request
from celgate.policy.context import ROOTS
from celgate.policy.references import _parser, scan

Fields = set[tuple[str, str]]

READS = [
    # (source, fields, whole)
    ('tool.name == "principal.team"', {("tool", "name")}, set()),  # a field name inside a string literal
    ("'request.headers' + \"tool.arguments\" == ''", set(), set()),
    ('r"tool.arguments\\d" == tool.name', {("tool", "name")}, set()),  # raw string
    ('"""\n  tool.arguments.x\n""" == tool.id', {("tool", "id")}, set()),  # triple-quoted, multi-line
    ("tool.name == 'it\\'s' && principal.team == 'a'", {("tool", "name"), ("principal", "team")}, set()),
    ('tool.name == "x" // && tool.arguments.x == 1', {("tool", "name")}, set()),  # comment
    ('tool.name == "x" // principal.id\n  && request.model == "m"', {("tool", "name"), ("request", "model")}, set()),
    ("has(principal.team) && !has(tool.arguments.path)", {("principal", "team"), ("tool", "arguments")}, set()),
    ("has(request.metadata.env)", {("request", "metadata")}, set()),
    ("request.tools.exists(tool, tool == 'x')", {("request", "tools")}, set()),  # shadows the root
    ("request.tools.all(principal, principal.size() > 0)", {("request", "tools")}, set()),
    ("[1].exists(tool, tool > 0) && tool.name == 'x'", {("tool", "name")}, set()),  # shadowing ends with the macro
    ("request.tools.exists(t, t == .tool.name)", {("request", "tools"), ("tool", "name")}, set()),  # `.x`: the root
    ("request.tools.map(tool, tool + 'x').exists(tool, tool == 'ax')", {("request", "tools")}, set()),
    ("request.tools.map(t, t == 'x', tool.id).size() > 0", {("request", "tools"), ("tool", "id")}, set()),
    ('request["tool"] == "x"', set(), {"request"}),  # a root indexed: read as a whole
    ('tool["arguments"]["x"] == 1', set(), {"tool"}),
    ('tool.arguments["x"] == 1', {("tool", "arguments")}, set()),  # tool.arguments.x via index
    ("tool.arguments[tool.name] == 1", {("tool", "arguments"), ("tool", "name")}, set()),
    ("tool.arguments.a.b.c == 1", {("tool", "arguments")}, set()),  # nested selects: the root's field
    ("(tool).name == 'x' && (tool.arguments).y == 1", {("tool", "name"), ("tool", "arguments")}, set()),
    ('{"k": tool.id}.k == "x" && [principal.team][0] == "a"', {("tool", "id"), ("principal", "team")}, set()),
    ("size(tool) > 0 && principal in [1]", set(), {"tool", "principal"}),
    ("tool.name.startsWith('a') ? now.getHours('UTC') > 1 : false", {("tool", "name")}, set()),  # a clock read
    ("now.getMilliseconds() > 1 || now > timestamp('2026-01-01T00:00:00Z')", set(), {"now"}),
    ("request.model.size() == -1 && -request.max_tokens < 0", {("request", "model"), ("request", "max_tokens")}, set()),
    ("user.tool == 1 && x.request.model == 2", set(), set()),  # not roots, and `.tool` of something else
]


@pytest.mark.parametrize(("source", "fields", "whole"), READS, ids=[r[0] for r in READS])
def test_reads_come_from_the_parse_tree(source: str, fields: Fields, whole: set[str]) -> None:
    refs = scan(source, ROOTS)
    assert refs.complete, refs.problem
    assert (set(refs.fields), set(refs.whole)) == (fields, whole)


@pytest.mark.parametrize(
    ("source", "clock", "whole"),
    [
        ('now.getHours("UTC") > 8 && now.getDayOfWeek() < 6', {"getHours", "getDayOfWeek"}, set()),
        ("now.getSeconds() == 0 && .now.getMinutes() == 0", {"getSeconds", "getMinutes"}, set()),
        ("now.getMilliseconds() == 0", set(), {"now"}),  # changes within a second
        ('now.getHours() > 1 && now < timestamp("2030-01-01T00:00:00Z")', {"getHours"}, {"now"}),
        ("string(now) == '' && now.getHours() > 1", {"getHours"}, {"now"}),
        ("[1].exists(now, now.getHours() > 0)", set(), set()),  # a macro variable, not the root
    ],
)
def test_now_read_through_its_accessors_is_a_clock_read(source: str, clock: set[str], whole: set[str]) -> None:
    """Only accessors whose value holds for a whole second make ``now`` cacheable per second (the loader)."""
    refs = scan(source, ROOTS)
    assert refs.complete, refs.problem
    assert (set(refs.clock), set(refs.whole)) == (clock, whole)
    assert refs.reads("now") is bool(clock or whole)


def test_functions_calls_and_regexes() -> None:
    refs = scan(
        'tool.name.matches(r"^a\\d+$") && tool.id.matches("^x\\\\.y$") && tool.name.matches(tool.id)'
        ' && glob(request.model, "g*") && "matches(\'(\')" == "" && size(request.tools) == 1',
        ROOTS,
    )
    assert refs.functions == {"matches", "glob", "size"}
    assert refs.global_calls == {"glob", "size"}
    assert refs.calls == {("matches", 1), ("glob", 2), ("size", 1)}
    assert refs.regexes == ("^a\\d+$", "^x\\.y$")  # the string literal inside a string is no call


INCOMPLETE = [
    ("request.`odd-name` == 1", "grammar rejects it at 1:9"),
    ("[1, 2,] == [1, 2]", "grammar rejects it"),
    ("tool.arguments.x ==== 1", "grammar rejects it"),
    ("google.protobuf.Int64Value{value: 1} == 1", "message construction"),
    ("request.metadata.all(k, v, v == 1)", "two-variable all()"),
    ("request.tools.exists(tool.name, true)", "must be a variable name"),
    ("r'\\'' == tool.name", "read differently by the two CEL engines"),  # cel-cpp ends r'\' at the 2nd quote
    ("request.tools.exists(tool, .tool.name == tool)", "the two CEL engines resolve it differently"),
    ("[1].all(now, .now == now)", "the two CEL engines resolve it differently"),
    ("(" * 400 + "tool.name" + ")" * 400 + " == 'x'", "nested too deeply"),
]


@pytest.mark.parametrize(("source", "problem"), INCOMPLETE, ids=[i[1] for i in INCOMPLETE])
def test_what_the_walk_cannot_follow_reads_everything(source: str, problem: str) -> None:
    refs = scan(source, ROOTS)
    assert not refs.complete and problem in refs.problem
    assert refs.reads("tool", "arguments") and refs.reads("now") and refs.reads("principal")


def test_the_analysis_parses_as_celpy_does() -> None:
    """The parser is built from celpy's grammar without celpy's wrapper: same trees, same errors at the same place."""
    from celpy.celparser import CELParseError, CELParser

    sources = [case[0] for case in READS + INCOMPLETE[:-1]] + ["true || false == !true", "x.true", "1 +", "a ? b"]
    for source in sources:
        try:
            expected: object = CELParser().parse(source)
        except CELParseError as exc:
            expected = (exc.line, exc.column)
        try:
            got: object = _parser().parse(source)
        except Exception as exc:
            got = (getattr(exc, "line", None), getattr(exc, "column", None))
        assert got == expected, source


def test_the_analysis_does_not_import_celpy() -> None:
    """celpy's package (evaluator, pendulum, dateutil) is memory a cel-expr process would never use."""
    code = (
        "import sys; from celgate.policy.references import scan; scan('x', frozenset()); print('celpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


def write(directory: Path, text: str) -> None:
    (directory / "policy.yaml").write_text(textwrap.dedent(text))


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_comprehension_variable_named_tool_in_a_request_rule_is_evaluated_not_refused(
    tmp_path: Path, backend: str
) -> None:
    """The token scan read ``tool`` here as the root: the rule was live, and its activation asserted."""
    write(
        tmp_path,
        """
        version: 1
        rules:
          - name: x-only
            on: request
            when: request.tools.exists(tool, tool == "x")
            effect: allow
        """,
    )
    policy = load_policies(tmp_path, backend)
    (rule,) = policy.rules
    assert rule.roots == {"request"} and rule.cache_paths == (("request", "tools"),)
    offered, other = build_request({"model": "m", "tools": ["x"]}), build_request({"model": "m", "tools": ["y"]})
    assert not policy.check_request(ANONYMOUS, offered).blocked
    assert policy.check_request(ANONYMOUS, other).blocked
    assert policy.explain(Point.REQUEST, ANONYMOUS, offered, None).decision.rule == "x-only"


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_engines_agree_with_the_analysis_on_shadowing_and_root_scope(tmp_path: Path, backend: str) -> None:
    """Inside its macro ``tool`` is the list element, on both engines; ``.tool`` outside one is the call."""
    write(
        tmp_path,
        """
        version: 1
        rules:
          - name: shadowed
            on: tool_call
            when: request.tools.exists(tool, tool == "get_weather") && tool.name == "lookup"
            effect: allow
          - name: root-scoped
            on: tool_call
            when: request.tools.exists(t, t == .tool.name) && .tool.name == "probe"
            effect: allow
        """,
    )
    policy = load_policies(tmp_path, backend)
    shadowed, root_scoped = policy.rules
    assert shadowed.cache_paths == (("request", "tools"), ("tool", "name"))
    assert root_scoped.cache_paths == (("request", "tools"), ("tool", "name"))
    request = build_request({"model": "m", "tools": ["get_weather", "probe"]})
    call = ToolCall("lookup", "{}", "c1", "upstream")
    assert policy.check_tool_call(ANONYMOUS, request, call).rule == "shadowed"
    probe = ToolCall("probe", "{}", "c2", "upstream")
    assert policy.check_tool_call(ANONYMOUS, request, probe).rule == "root-scoped"


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_root_scoped_name_a_macro_shadows_is_refused(tmp_path: Path, backend: str) -> None:
    """cel-cpp reads ``.tool`` here as the call, celpy as the list element: no single meaning, so no rule."""
    write(
        tmp_path,
        """
        version: 1
        rules:
          - {name: ambiguous, on: tool_call, when: 'request.tools.exists(tool, .tool.name == tool)', effect: allow}
        """,
    )
    with pytest.raises(PolicyLoadError) as caught:
        load_policies(tmp_path, backend)
    assert "the two CEL engines resolve it differently" in caught.value.problems[0].message


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_arguments_read_via_index_or_has_hold_streamed_calls(tmp_path: Path, backend: str) -> None:
    write(
        tmp_path,
        """
        version: 1
        rules:
          - {name: by-index, on: tool_call, tools: [a], when: 'tool.arguments["path"] == "/x"', effect: allow}
          - {name: by-has, on: tool_call, tools: [b], when: '!has(tool.arguments.path)', effect: allow}
          - {name: name-only, on: tool_call, tools: [c], when: 'tool.name == "tool.arguments"', effect: allow}
        """,
    )
    policy = load_policies(tmp_path, backend)
    request = build_request({"model": "m"})
    assert policy.reads_arguments(ANONYMOUS, request, "a") and policy.reads_arguments(ANONYMOUS, request, "b")
    assert not policy.reads_arguments(ANONYMOUS, request, "c")
    assert (
        policy.check_tool_call(ANONYMOUS, request, ToolCall("a", '{"path": "/x"}', "1", "upstream")).rule == "by-index"
    )
    assert policy.check_tool_call(ANONYMOUS, request, ToolCall("b", '{"path": "/x"}', "2", "upstream")).blocked


def test_an_expression_celgate_cannot_analyse_is_a_load_error(tmp_path: Path) -> None:
    """cel-expr accepts a trailing comma; celgate could not tell what the rule reads, so it refuses it."""
    write(
        tmp_path,
        """
        version: 1
        rules:
          - {name: trailing, on: request, when: 'request.model in ["a", "b",]', effect: allow}
        """,
    )
    with pytest.raises(PolicyLoadError) as caught:
        load_policies(tmp_path, "cel-expr")
    (problem,) = caught.value.problems
    assert (problem.rule, problem.line) == ("trailing", 4)
    assert problem.message.startswith("when: celgate cannot analyse this expression: celgate's CEL grammar rejects it")


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_stable_rule_is_cached_by_the_fields_it_reads(tmp_path: Path, backend: str) -> None:
    write(
        tmp_path,
        """
        version: 1
        rules:
          - name: team
            on: request
            when: >-
              has(principal.team) && principal.team == "search" // not "principal.roles"
            effect: allow
        """,
    )
    policy = load_policies(tmp_path, backend)
    assert policy.rules[0].cache_paths == (("principal", "team"),)
    for principal in (Principal("a", {"team": "search"}), Principal("b", {"team": "search"}), Principal("c", {})):
        policy.check_request(principal, build_request({"model": "m"}))
    assert len(policy.results) == 2  # "search" and absent: one entry each
