"""The evaluator: precedence, fail-closed errors, dry-run, globs and candidates, caches."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from celgate.policy import (
    ANONYMOUS,
    Action,
    Effect,
    Mode,
    Point,
    PolicySet,
    Principal,
    RequestInfo,
    ToolCall,
    load_policies,
)
from celgate.policy.backends import BACKENDS
from celgate.policy.cli import build_request
from celgate.policy.context import NOW_SECOND
from celgate.policy.evaluate import _freeze
from tests.helpers import write_yaml


def load(directory: Path, text: str, backend: str = "cel-expr") -> PolicySet:
    write_yaml(directory, text)
    return load_policies(directory, backend)


def request(model: str = "gpt-4o", **fields: Any) -> RequestInfo:
    return build_request({"model": model, **fields})


def call(name: str, raw_arguments: str = "{}", source: str = "upstream") -> ToolCall:
    return ToolCall(name=name, raw_arguments=raw_arguments, id="call_1", source=source)


ALICE = Principal("alice", {"team": "search", "roles": ["dev"]})
BOB = Principal("bob", {"team": "data", "roles": []})

# `when` expressions with a known outcome for ALICE
TRUE, FALSE, ERROR = 'principal.team == "search"', 'principal.team == "nobody"', "principal.nope == 1"
EXPRESSIONS = {"true": TRUE, "false": FALSE, "error": ERROR}


def two_rules(tmp_path: Path, allow_when: str, deny_when: str, backend: str, defaults: str = "") -> PolicySet:
    return load(
        tmp_path,
        f"""
        version: 1
        {defaults}
        rules:
          - name: the-allow
            on: request
            when: '{allow_when}'
            effect: allow
          - name: the-deny
            on: request
            when: '{deny_when}'
            effect: deny
            reason: nope
        """,
        backend,
    )


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("allow", ["true", "false", "error"])
@pytest.mark.parametrize("deny", ["true", "false", "error"])
def test_precedence_and_fail_closed(tmp_path: Path, backend: str, allow: str, deny: str) -> None:
    policy = two_rules(tmp_path, EXPRESSIONS[allow], EXPRESSIONS[deny], backend)
    decision = policy.check_request(ALICE, request())
    if deny in ("true", "error"):  # deny overrides; an erroring deny rule denies
        assert (decision.effect, decision.rule, decision.reason) == (Effect.DENY, "the-deny", "nope")
    elif allow == "true":
        assert (decision.effect, decision.rule) == (Effect.ALLOW, "the-allow")
    else:  # an erroring allow rule never allows
        assert (decision.effect, decision.rule, decision.reason) == (Effect.DENY, None, "no rule allows it")
    expected_errors = [name for name, outcome in (("the-allow", allow), ("the-deny", deny)) if outcome == "error"]
    assert [rule for rule, _ in decision.errors] == expected_errors
    assert all(message for _, message in decision.errors)
    expected_matched = [name for name, outcome in (("the-allow", allow), ("the-deny", deny)) if outcome == "true"]
    assert list(decision.matched) == expected_matched


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_erroring_allow_rule_under_default_allow_is_the_default(tmp_path: Path, backend: str) -> None:
    policy = two_rules(tmp_path, ERROR, FALSE, backend, "defaults: {decision: allow}")
    decision = policy.check_request(ALICE, request())
    assert (decision.effect, decision.rule, decision.reason) == (Effect.ALLOW, None, "allowed by default")
    assert decision.errors[0][0] == "the-allow"


def test_deny_message_and_blocked(tmp_path: Path) -> None:
    policy = two_rules(tmp_path, TRUE, TRUE, "cel-expr")
    decision = policy.check_request(ALICE, request("gpt-4o"))
    assert decision.blocked and not decision.would_deny
    assert decision.message == "celgate: gpt-4o denied by policy (the-deny): nope"
    assert decision.subject == "gpt-4o" and decision.point is Point.REQUEST
    assert decision.policy_version == policy.version and decision.eval_seconds > 0


def test_default_deny_message_names_default(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        """
        version: 1
        defaults: {deny_message: "{subject}/{rule}/{reason}"}
        rules: []
        """,
    )
    decision = policy.check_tool_call(ALICE, request(), call("shell.exec"))
    assert decision.message == "shell.exec/default/no rule allows it"
    assert decision.action is Action.STRIP and decision.subject == "shell.exec"


def test_default_reason_of_a_rule_without_reason(tmp_path: Path) -> None:
    policy = load(tmp_path, "version: 1\nrules: [{name: r, on: request, effect: deny}]")
    assert policy.check_request(ALICE, request()).reason == "denied by rule r"


DRY_RUN_POLICY = """
    version: 1
    {defaults}
    rules:
      - name: allow-gpt
        on: request
        models: ["gpt-*"]
        effect: allow
      - name: trial-deny
        on: request
        when: principal.team == "search"
        effect: deny
        mode: dry-run
        reason: under review
      - name: hard-deny
        on: request
        models: ["*-admin"]
        effect: deny
        mode: enforce
"""


def dry_run_policy(tmp_path: Path, defaults: str = "") -> PolicySet:
    return load(tmp_path, DRY_RUN_POLICY.format(defaults=defaults))


def test_dry_run_deny_over_an_allow_is_a_would_deny(tmp_path: Path) -> None:
    decision = dry_run_policy(tmp_path).check_request(ALICE, request("gpt-4o"))
    assert (decision.effect, decision.mode, decision.rule) == (Effect.DENY, Mode.DRY_RUN, "trial-deny")
    assert decision.would_deny and not decision.blocked
    assert decision.matched == ("allow-gpt", "trial-deny")
    assert decision.reason == "under review"


def test_dry_run_deny_does_not_soften_the_enforced_default(tmp_path: Path) -> None:
    decision = dry_run_policy(tmp_path).check_request(ALICE, request("claude"))
    assert (decision.effect, decision.mode, decision.rule) == (Effect.DENY, Mode.ENFORCE, None)
    assert decision.blocked and decision.matched == ("trial-deny",)


def test_enforcing_deny_beats_dry_run_deny(tmp_path: Path) -> None:
    decision = dry_run_policy(tmp_path).check_request(ALICE, request("gpt-admin"))
    assert (decision.effect, decision.mode, decision.rule) == (Effect.DENY, Mode.ENFORCE, "hard-deny")


def test_set_wide_dry_run(tmp_path: Path) -> None:
    policy = dry_run_policy(tmp_path, "defaults: {mode: dry-run}")
    default = policy.check_request(BOB, request("claude"))
    assert (default.effect, default.mode, default.rule) == (Effect.DENY, Mode.DRY_RUN, None)
    assert default.would_deny
    # a rule's own `mode: enforce` still blocks inside a dry-run set
    assert policy.check_request(BOB, request("gpt-admin")).blocked
    # with the default in dry-run, the dry-run rule names the would-deny
    assert policy.check_request(ALICE, request("claude")).rule == "trial-deny"


def test_erroring_dry_run_deny_is_a_would_deny(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        f"""
        version: 1
        defaults: {{decision: allow}}
        rules:
          - {{name: shaky, on: request, when: '{ERROR}', effect: deny, mode: dry-run}}
        """,
    )
    decision = policy.check_request(ALICE, request())
    assert decision.would_deny and decision.rule == "shaky" and decision.errors[0][0] == "shaky"


GLOB_POLICY = """
    version: 1
    rules:
      - {name: by-principal, on: tool_call, principals: ["ali*"], effect: allow}
      - {name: by-model, on: tool_call, models: ["gpt-4o*"], effect: allow}
      - {name: by-agent, on: tool_call, agents: ["*Agent", "labs/*planner*"], effect: allow}
      - {name: by-tool, on: tool_call, tools: ["shell*", "*exec*"], effect: deny}
      - name: all-lists
        on: tool_call
        principals: ["bob"]
        models: ["m?"]
        agents: ["a[0-9]"]
        tools: ["t"]
        effect: allow
      - {name: request-rule, on: request, effect: allow}
"""


@pytest.mark.parametrize(
    ("principal", "model", "agent", "tool", "expected"),
    [
        (ALICE, "claude", None, "x", ("by-principal",)),
        (BOB, "gpt-4o-mini", None, "x", ("by-model",)),
        (BOB, "GPT-4o", None, "x", ()),  # case-sensitive
        (BOB, "m", "ResearchAgent", "x", ("by-agent",)),
        (BOB, "m", "labs/team/my-planner-v2", "x", ("by-agent",)),  # `/` is an ordinary character
        (BOB, "m", "research-agent", "x", ()),
        (BOB, "m", None, "shell.exec", ("by-tool",)),
        (BOB, "m", None, "python_exec", ("by-tool",)),
        (BOB, "m1", "a7", "t", ("all-lists",)),
        (BOB, "m1", "a7", "u", ()),  # every given list must match
        (BOB, "m1", None, "t", ()),  # an agents list never matches a request without agent
    ],
)
def test_globs_pick_the_candidates(
    tmp_path: Path, principal: Principal, model: str, agent: str | None, tool: str, expected: tuple[str, ...]
) -> None:
    policy = load(tmp_path, GLOB_POLICY)
    decision = policy.check_tool_call(principal, request(model, agent=agent), call(tool))
    assert decision.matched == expected
    explanation = policy.explain(Point.TOOL_CALL, principal, request(model, agent=agent), call(tool))
    assert tuple(t.rule for t in explanation.rules if t.candidate) == expected
    assert all(t.outcome == "-" and t.mismatched for t in explanation.rules if not t.candidate)
    assert "request-rule" not in {t.rule for t in explanation.rules}


def test_explain_names_the_lists_that_did_not_match(tmp_path: Path) -> None:
    policy = load(tmp_path, GLOB_POLICY)
    explanation = policy.explain(Point.TOOL_CALL, BOB, request("m1"), call("u"))
    trace = next(t for t in explanation.rules if t.rule == "all-lists")
    assert trace.mismatched == ("agents", "tools")


def test_candidate_lists_are_memoized(tmp_path: Path) -> None:
    policy = load(tmp_path, GLOB_POLICY)
    for _ in range(3):
        policy.check_tool_call(ALICE, request("claude"), call("x"))
    info = policy.index.lookup.cache_info()  # type: ignore[attr-defined]
    assert (info.hits, info.misses) == (2, 1)


CACHE_POLICY = """
    version: 1
    defaults: {decision: allow}
    rules:
      - name: team
        on: request
        when: principal.team == "search" && request.temperature == 1
        effect: deny
      - name: header
        on: request
        when: '"x-block" in request.headers'
        effect: deny
"""


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_cached_outcomes_follow_the_values_read(tmp_path: Path, backend: str) -> None:
    policy = load(tmp_path, CACHE_POLICY, backend)
    rules = {r.name: r for r in policy.rules}
    assert rules["team"].cache_paths == (("principal", "team"), ("request", "temperature"))
    assert rules["header"].cache_paths is None  # headers are per-call data
    for _ in range(2):
        assert policy.check_request(ALICE, request(temperature=1)).rule == "team"
        assert policy.check_request(BOB, request(temperature=1)).rule is None
        assert policy.check_request(ALICE, request(temperature=2)).rule is None
        assert policy.check_request(ALICE, request()).errors[0][0] == "team"  # missing field: still an error
        assert policy.check_request(BOB, request(headers={"x-block": "1"})).rule == "header"
        assert policy.check_request(BOB, request(headers={"x-other": "1"})).rule is None
    assert len(policy.results) == 5  # (team, temperature) pairs seen; the header rule is never cached


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_cached_outcomes_stay_right_when_the_cache_is_emptied(tmp_path: Path, backend: str) -> None:
    """Plans remember their key tokens past a clear: a token is never handed out twice."""
    policy = load(tmp_path, CACHE_POLICY, backend)
    policy.results._max_entries = 2  # a tiny cache, emptied every few decisions
    for temperature in (1, 2, 1, 3, 1, 2):
        for principal, team_rule in ((ALICE, "team"), (BOB, None)):
            expected = team_rule if temperature == 1 else None
            assert policy.check_request(principal, request(temperature=temperature)).rule == expected
    tokens = [policy.results.token((name,)) for name in "abcdefg"]  # the token map is emptied twice on the way
    assert len(set(tokens)) == len(tokens)


def test_cache_keys_keep_cel_types_apart() -> None:
    assert len({_freeze(1), _freeze(1.0), _freeze(True), _freeze("1")}) == 4
    assert _freeze(["a", {"b": [1]}]) == _freeze(["a", {"b": [1]}])
    assert _freeze([1]) != _freeze((1.0,))


def allowing_unless(tmp_path: Path, backend: str, *rules: str) -> PolicySet:
    """A set that allows by default, with ``rules`` (one flow-style YAML mapping each)."""
    listed = "".join(f"  - {rule}\n" for rule in rules)
    return load(tmp_path, f"version: 1\ndefaults: {{decision: allow}}\nrules:\n{listed}", backend)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_now_is_an_input(tmp_path: Path, backend: str) -> None:
    nights = """{name: nights, on: request, when: 'now.getHours("UTC") < 8', effect: deny}"""
    policy = allowing_unless(tmp_path, backend, nights)
    night, day = datetime(2026, 1, 1, 3, tzinfo=UTC), datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert policy.check_request(ALICE, request(), now=night).blocked
    assert not policy.check_request(ALICE, request(), now=day).blocked
    assert policy.check_request(ALICE, request(), now=night.replace(microsecond=999_999)).blocked
    assert policy.check_request(ALICE, request(), now=datetime(2026, 1, 1, 7, 59, 59, tzinfo=UTC)).blocked
    assert not policy.check_request(ALICE, request(), now=datetime(2026, 1, 1, 8, tzinfo=UTC)).blocked
    assert "now" in policy.rules[0].roots and policy.rules[0].cache_paths == (NOW_SECOND,)  # cached per second


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_now_read_otherwise_is_never_cached(tmp_path: Path, backend: str) -> None:
    policy = allowing_unless(
        tmp_path,
        backend,
        """{name: late, on: request, when: 'now > timestamp("2026-01-01T00:00:00.5Z")', effect: deny}""",
        "{name: ms, on: request, when: 'now.getMilliseconds() > 500', effect: deny}",
    )
    assert [rule.cache_paths for rule in policy.rules] == [None, None]
    early = datetime(2026, 1, 1, tzinfo=UTC)
    assert not policy.check_request(ALICE, request(), now=early).blocked
    assert policy.check_request(ALICE, request(), now=early.replace(microsecond=600_000)).blocked


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_tool_arguments(tmp_path: Path, backend: str) -> None:
    policy = load(
        tmp_path,
        """
        version: 1
        rules:
          - name: small
            on: tool_call
            tools: [pay]
            when: has(tool.arguments.amount) && tool.arguments.amount <= 100
            effect: allow
          - name: raw
            on: tool_call
            tools: [echo]
            when: tool.raw_arguments == "not json"
            effect: allow
          - name: agent-only
            on: tool_call
            tools: [internal]
            when: tool.source == "agent" && tool.id == "call_1"
            effect: allow
        """,
        backend,
    )
    assert policy.check_tool_call(ALICE, request(), call("pay", '{"amount": 50}')).rule == "small"
    assert policy.check_tool_call(ALICE, request(), call("pay", '{"amount": 500}')).rule is None
    assert policy.check_tool_call(ALICE, request(), call("pay", "[1, 2]")).rule is None
    assert policy.check_tool_call(ALICE, request(), call("echo", "not json")).rule == "raw"
    assert policy.check_tool_call(ALICE, request(), call("pay", "not json")).errors[0][0] == "small"
    assert policy.check_tool_call(ALICE, request(), call("internal", source="agent")).rule == "agent-only"
    assert policy.check_tool_call(ALICE, request(), call("internal")).rule is None


def test_action_error_is_carried(tmp_path: Path) -> None:
    policy = load(tmp_path, "version: 1\nrules: [{name: r, on: tool_call, effect: deny, action: error}]")
    assert policy.check_tool_call(ALICE, request(), call("t")).action is Action.ERROR


def test_request_scalars_user_and_metadata(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        """
        version: 1
        rules:
          - name: all-fields
            on: request
            when: >-
              request.max_tokens == 10 && request.user == "u1" && request.metadata.env == "prod" &&
              request.agent == "" && request.path == "/v1/chat/completions" && request.tools == ["a"] &&
              !has(request.temperature) && request.model == "gpt-4o" && !request.stream
            effect: allow
        """,
    )
    info = request(max_tokens=10, user="u1", metadata={"env": "prod"}, tools=["a"])
    assert policy.check_request(ALICE, info).rule == "all-fields"


USABLE_POLICY = """
    version: 1
    {defaults}
    rules:
      - {{name: allow-search, on: tool_call, tools: ["search*"], when: 'tool.arguments.q != ""', effect: allow}}
      - {{name: block-shell, on: tool_call, tools: ["shell*"], effect: deny}}
      - {{name: trial, on: tool_call, tools: ["browser.*"], effect: deny, mode: dry-run}}
      - {{name: conditional, on: tool_call, tools: ["search.deep"], when: 'principal.team == "x"', effect: deny}}
      - {{name: allow-shell-for-alice, on: tool_call, principals: [alice], tools: ["shell*"], effect: allow}}
"""


def test_usable_tools_under_default_deny(tmp_path: Path) -> None:
    policy = load(tmp_path, USABLE_POLICY.format(defaults=""))
    offered = ["search", "search.deep", "shell.exec", "browser.open", "other"]
    # allow rules count whatever their `when`; unconditional enforcing denies remove; no allow + default deny removes
    assert policy.usable_tools(BOB, request(), offered) == {"search", "search.deep"}
    assert policy.usable_tools(ALICE, request(), offered) == {"search", "search.deep"}


@pytest.mark.parametrize("defaults", ["defaults: {decision: allow}", "defaults: {mode: dry-run}"])
def test_usable_tools_when_the_default_passes(tmp_path: Path, defaults: str) -> None:
    policy = load(tmp_path, USABLE_POLICY.format(defaults=defaults))
    offered = ["search", "shell.exec", "browser.open", "other"]
    expected = {"search", "browser.open", "other"}
    if "dry-run" in defaults:  # in a dry-run set the unconditional deny is dry-run too: nothing is removed
        expected.add("shell.exec")
    assert policy.usable_tools(BOB, request(), offered) == expected


def test_reads_arguments(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        """
        version: 1
        rules:
          - {name: args, on: tool_call, tools: [a], when: 'tool.arguments.x == 1', effect: allow}
          - {name: raw, on: tool_call, tools: [r], when: 'size(tool.raw_arguments) < 10', effect: allow}
          - {name: name-only, on: tool_call, tools: [n], when: 'tool.name.startsWith("n")', effect: allow}
          - {name: whole, on: tool_call, tools: [w], when: 'size(tool) > 0', effect: allow}
          - {name: bare, on: tool_call, tools: [b], effect: allow}
        """,
    )
    reads = {name: policy.reads_arguments(ALICE, request(), name) for name in "arnwbz"}
    assert reads == {"a": True, "r": True, "n": False, "w": True, "b": False, "z": False}


def test_allow_all() -> None:
    policy = PolicySet.allow_all()
    request_decision = policy.check_request(ANONYMOUS, request())
    tool_decision = policy.check_tool_call(ANONYMOUS, request(), call("shell.exec"))
    for decision in (request_decision, tool_decision):
        assert (decision.effect, decision.rule, decision.blocked) == (Effect.ALLOW, None, False)
    assert policy.usable_tools(ANONYMOUS, request(), ["x"]) == {"x"}
    assert policy.backend == "none" and policy.rule_count == 0


def test_resolve_principal(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        """
        version: 1
        principals:
          - id: bench-app
            key_sha256: c00397de4384b5bbaf14c02fe1ec7020d28d1eeab6a722c576c84b6678c41c29
            team: search
        rules: []
        """,
    )
    assert policy.resolve_principal("sk-bench") == Principal("bench-app", {"team": "search"})
    assert policy.resolve_principal("sk-other") is ANONYMOUS
    assert policy.resolve_principal(None) is ANONYMOUS
    assert policy.resolve_principal("") is ANONYMOUS


def test_explain_and_decide_agree(tmp_path: Path) -> None:
    policy = dry_run_policy(tmp_path)
    for principal in (ALICE, BOB):
        for model in ("gpt-4o", "claude", "gpt-admin"):
            fast = policy.check_request(principal, request(model))
            slow = policy.explain(Point.REQUEST, principal, request(model), None).decision
            assert (fast.effect, fast.mode, fast.rule, fast.matched) == (
                slow.effect,
                slow.mode,
                slow.rule,
                slow.matched,
            )


HEADER_READERS = """\
version: 1
defaults: {decision: allow}
rules:
  - {name: admin-models, on: request, models: ["*-admin"], when: '"x-team" in request.headers', effect: deny}
  - {name: alice-tools, on: tool_call, principals: [alice], tools: [fetch], when: 'size(request.headers) > 9',
     effect: deny}
  - {name: planner, on: request, agents: ["planner"], when: 'request.headers["x-a"] == "b"', effect: deny}
  - {name: whole, on: request, models: ["whole-*"], when: 'request.model == "x" || size(request) > 99', effect: deny}
  - {name: no-headers, on: request, when: 'request.model == "y"', effect: deny}
"""


def test_headers_are_read_only_where_a_rule_that_may_decide_reads_them(tmp_path: Path) -> None:
    """``reads_headers``: the request point's and every tool call's rules, by principal, model and agent."""
    policy = load(tmp_path, HEADER_READERS)
    assert policy.reads_headers(BOB, "gpt-4o-admin", None)  # the request rule's models match
    assert not policy.reads_headers(BOB, "gpt-4o", None)  # nothing reading headers may decide it
    assert policy.reads_headers(ALICE, "gpt-4o", None)  # alice's tool calls may meet alice-tools
    assert policy.reads_headers(BOB, "gpt-4o", "planner") and not policy.reads_headers(BOB, "gpt-4o", "other")
    assert policy.reads_headers(BOB, "whole-1", None)  # `request` read as a whole includes its headers
    assert not policy.reads_headers(BOB, "gpt-4o", None)  # remembered, and still the same answer
