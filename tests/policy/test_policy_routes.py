"""Opened routes: the ``routes:`` section, loading and its errors, matching, the summary, explain and test cases."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest

from celgate.policy import (
    ANONYMOUS,
    Effect,
    Mode,
    Point,
    PolicyLoadError,
    PolicySet,
    PolicyStore,
    Principal,
    Problem,
    RequestInfo,
    audit_record,
    classify,
    load_policies,
)
from celgate.policy.backends import BACKENDS
from celgate.policy.cli import build_request, main
from tests.helpers import write_yaml

ROUTES = """
    version: 1
    principals:
      - {id: team-ops-1, key_env: OPS_KEY, team: ops}
      - {id: team-ops-2, key_env: OPS2_KEY, team: data}
    rules:
      - {name: any-model, on: request, effect: allow}
    routes:
      - id: allow-batches
        paths: ["/v1/batches", "/v1/batches/**"]
        methods: ["GET", "POST"]
        principals: ["team-ops-*"]
        when: 'principal.team == "ops"'
        description: batch jobs for ops
      - id: files-read
        paths: ["/v1/files/*"]
        methods: [GET]
      - id: shaky
        paths: ["/v1/realtime"]
        when: principal.missing == 1
      - id: realtime-with-header
        paths: ["/v1/realtime"]
        when: '"x-realtime" in request.headers'
"""
OPS = Principal("team-ops-1", {"team": "ops"})
DATA = Principal("team-ops-2", {"team": "data"})


def to(path: str, method: str = "POST", **fields: object) -> RequestInfo:
    return build_request({"path": path, "method": method, **fields})


@pytest.fixture(params=list(BACKENDS))
def policy(request: pytest.FixtureRequest, tmp_path: Path) -> PolicySet:
    write_yaml(tmp_path, ROUTES)
    return load_policies(tmp_path, request.param, environ={})


def test_routes_load_in_order_with_their_lists(policy: PolicySet) -> None:
    assert [route.id for route in policy.routes] == ["allow-batches", "files-read", "shaky", "realtime-with-header"]
    batches, files, *_ = policy.routes
    assert batches.paths.patterns == ("/v1/batches", "/v1/batches/**") and batches.methods == ("GET", "POST")
    assert batches.principals is not None and batches.principals.patterns == ("team-ops-*",)
    assert (batches.reason, files.reason) == ("batch jobs for ops", "opened by route files-read")
    assert (files.principals, files.when, files.program, files.line) == (None, None, None, 14)
    assert batches.roots == {"principal"} and policy.rule_count == 1


@pytest.mark.parametrize(
    ("principal", "method", "path", "rule"),
    [
        (OPS, "POST", "/v1/batches", "allow-batches"),
        (OPS, "GET", "/v1/batches/batch_1/cancel", "allow-batches"),  # `*` and `**` cross `/`
        (OPS, "DELETE", "/v1/batches/batch_1", None),  # method not listed
        (DATA, "POST", "/v1/batches", None),  # principal glob matches, `when` is false
        (ANONYMOUS, "POST", "/v1/batches", None),  # principal glob does not match
        (OPS, "POST", "/v1/batchesX", None),
        (ANONYMOUS, "GET", "/v1/files/file_1", "files-read"),
        (ANONYMOUS, "POST", "/v1/files/file_1", None),
        (ANONYMOUS, "GET", "/v1/assistants", None),
    ],
)
def test_open_route(policy: PolicySet, principal: Principal, method: str, path: str, rule: str | None) -> None:
    decision = policy.open_route(principal, to(path, method))
    assert (decision.point, decision.rule, decision.subject) == (Point.ROUTE, rule, f"{method} {path}")
    assert decision.effect is (Effect.ALLOW if rule else Effect.DENY) and decision.blocked is (rule is None)
    assert decision.policy_version == policy.version
    if rule is None:
        assert decision.reason == "no route opens this path" and decision.matched == ()
        assert decision.message == f"celgate: {method} {path} denied by policy (default): no route opens this path"
    else:
        assert decision.message == "" and decision.matched == (rule,)


def test_an_erroring_when_does_not_open_but_a_later_entry_may(policy: PolicySet) -> None:
    refused = policy.open_route(ANONYMOUS, to("/v1/realtime", "GET"))
    assert refused.blocked and [rule for rule, _ in refused.errors] == ["shaky"]
    opened = policy.open_route(ANONYMOUS, to("/v1/realtime", "GET", headers={"X-Realtime": "1"}))
    assert opened.rule == "realtime-with-header" and [rule for rule, _ in opened.errors] == ["shaky"]


def test_the_whole_set_in_dry_run_makes_a_refusal_a_would_deny(tmp_path: Path) -> None:
    write_yaml(tmp_path, "version: 1\ndefaults: {mode: dry-run, decision: allow}\nroutes: [{id: r, paths: [/v1/x]}]\n")
    policy = load_policies(tmp_path)
    decision = policy.open_route(ANONYMOUS, to("/v1/y"))
    assert decision.would_deny and not decision.blocked  # defaults.decision: allow does not open it
    assert policy.open_route(ANONYMOUS, to("/v1/x")).effect is Effect.ALLOW


def test_without_routes_every_ungoverned_path_is_refused_and_allow_all_opens_everything(tmp_path: Path) -> None:
    write_yaml(tmp_path, "version: 1\ndefaults: {decision: allow}\n")
    assert load_policies(tmp_path).open_route(ANONYMOUS, to("/v1/batches")).blocked
    opened = PolicySet.allow_all().open_route(ANONYMOUS, to("/v1/batches"))
    assert (opened.effect, opened.rule, opened.reason) == (Effect.ALLOW, None, "allowed by default")


@pytest.mark.parametrize(
    ("method", "path", "points", "requires_model"),
    [
        ("POST", "/v1/chat/completions", (Point.REQUEST, Point.TOOL_CALL), True),
        ("POST", "/v1/responses", (Point.REQUEST, Point.TOOL_CALL), True),
        ("GET", "/v1/chat/completions", (Point.REQUEST, Point.TOOL_CALL), False),  # stored: read back, filtered
        ("GET", "/v1/responses/resp_1", (Point.REQUEST, Point.TOOL_CALL), False),
        ("GET", "/v1/models", (Point.REQUEST,), False),
        ("POST", "/v1/embeddings", (Point.REQUEST,), False),  # tool-free: admission only
        ("DELETE", "/v1/responses/resp_1", (Point.REQUEST,), False),
        ("POST", "/v1/batches", (Point.ROUTE, Point.REQUEST), False),  # not governed: a route must open it
        ("PUT", "/v1/chat/completions", (Point.ROUTE, Point.REQUEST), False),
    ],
)
def test_the_route_table_names_the_points_of_each_route(
    method: str, path: str, points: tuple[Point, ...], requires_model: bool
) -> None:
    route = classify(method, path)
    assert (route.points, route.requires_model) == (points, requires_model)


def test_routes_merge_across_files_and_ids_are_unique(tmp_path: Path) -> None:
    write_yaml(tmp_path, "version: 1\nroutes: [{id: a, paths: [/v1/a]}]\n", "a.yaml")
    write_yaml(tmp_path, "version: 1\nroutes: [{id: b, paths: [/v1/b]}]\n", "b.yaml")
    assert [route.id for route in load_policies(tmp_path).routes] == ["a", "b"]
    path_c = str(
        write_yaml(
            tmp_path,
            "version: 1\nrules:\n  - {name: b, on: request, effect: allow}\nroutes:\n  - {id: a, paths: [/v1/c]}\n",
            "c.yaml",
        )
    )
    with pytest.raises(PolicyLoadError) as caught:
        load_policies(tmp_path)
    assert {(p.file, p.line, p.rule, p.message) for p in caught.value.problems} == {
        (path_c, 5, "a", f"duplicate route id (first at {tmp_path / 'a.yaml'}:2)"),
        (str(tmp_path / "b.yaml"), 2, "b", f"route id is also a rule name ({path_c}:3)"),
    }


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_route_problems_are_all_reported_with_positions(tmp_path: Path, backend: str) -> None:
    path = str(
        write_yaml(
            tmp_path,
            """
        version: 1
        routes:
          - id: typo
            paths: [/v1/x]
            method: [GET]
          - paths: [/v1/x]
          - id: no-paths
            methods: [GET]
          - id: relative
            paths: [v1/x]
          - id: never-canonical
            paths: ["/v1//x", "/v1/./x"]
          - id: lower-case
            paths: [/v1/x]
            methods: [get]
          - id: empty-lists
            paths: []
            principals: []
          - id: reads-tool
            paths: [/v1/x]
            when: tool.name == "x"
          - id: bad-cel
            paths: [/v1/x]
            when: principal.team ==
          - id: unknown-function
            paths: [/v1/x]
            when: request.path.lowerAscii() == "/v1/x"
          - not a mapping
        """,
        )
    )
    with pytest.raises(PolicyLoadError) as caught:
        load_policies(tmp_path, backend)
    found = {(p.line, p.rule, p.message.split(": Syntax error")[0]) for p in caught.value.problems}
    at = ("1:5", "1:18") if backend == "cel-expr" else ("1:1", "1:16")  # the engines place columns differently
    methods = "GET | HEAD | POST | PUT | PATCH | DELETE | OPTIONS"
    assert all(p.file == path for p in caught.value.problems)
    assert found == {
        (5, "typo", "unknown key 'method' in route (did you mean 'methods'?)"),
        (6, None, "route needs an `id`"),
        (7, "no-paths", "route needs `paths`"),
        (10, "relative", "path 'v1/x' must start with '/'"),
        (12, "never-canonical", "path '/v1//x' can never match a canonical path"),
        (15, "lower-case", f"`methods` entry 'get' is not one of {methods} (did you mean 'GET'?)"),
        (17, "empty-lists", "`paths` must be a non-empty list of path globs"),
        (18, "empty-lists", "`principals` must be a non-empty list of glob patterns"),
        (21, "reads-tool", f"when at {at[0]}: routes cannot read `tool` (it exists only in `on: tool_call` rules)"),
        (24, "bad-cel", f"when at {at[1]}"),
        (27, "unknown-function", "when: function 'lowerAscii' is not in celgate's CEL subset (see docs/policies.md)"),
        (28, None, "each route must be a mapping with an `id` and `paths`"),
    }


def test_on_route_is_not_a_rule_point(tmp_path: Path) -> None:
    write_yaml(tmp_path, "version: 1\nrules:\n  - {name: r, on: route, effect: allow}\n")
    with pytest.raises(PolicyLoadError) as caught:
        load_policies(tmp_path)
    assert caught.value.problems == [
        Problem(str(tmp_path / "policy.yaml"), 3, "r", "`on` must be one of request | tool_call, not 'route'")
    ]


def test_the_admin_summary_lists_the_routes(tmp_path: Path) -> None:
    write_yaml(tmp_path, ROUTES)
    store = PolicyStore(tmp_path, environ={})
    active = store.status()["active"]
    assert active == store.current.summary()
    assert active["routes"][0] == {
        "id": "allow-batches",
        "paths": ["/v1/batches", "/v1/batches/**"],
        "methods": ["GET", "POST"],
        "principals": ["team-ops-*"],
        "when": 'principal.team == "ops"',
        "description": "batch jobs for ops",
        "file": str(tmp_path / "policy.yaml"),
        "line": 8,
    }
    assert active["routes"][1]["principals"] is None and active["routes"][2]["methods"] is None
    assert PolicySet.allow_all().summary()["routes"] == []


def test_a_route_decision_is_audited_like_any_other(policy: PolicySet) -> None:
    decision = policy.open_route(OPS, to("/v1/batches"))
    record = audit_record(decision, request_id="r1", principal=OPS, tool=None, include_arguments=False)
    assert (record["point"], record["subject"], record["effect"], record["rule"]) == (
        "route", "POST /v1/batches", "allow", "allow-batches",
    )  # fmt: skip
    assert record["mode"] == Mode.ENFORCE.value and "tool_call_id" not in record


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out), out.getvalue()


@pytest.fixture
def policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPS_KEY", "sk-ops")
    monkeypatch.setenv("OPS2_KEY", "sk-ops-2")
    directory = tmp_path / "policies"
    directory.mkdir()
    write_yaml(directory, ROUTES)
    return directory


def test_explain_a_path_a_route_opens(policies: Path) -> None:
    code, out = run("explain", str(policies), "--key", "sk-ops", "--path", "/v1/batches/b1", "--method", "get")
    lines = out.splitlines()
    assert code == 0
    assert lines[0] == "point: route  subject: GET /v1/batches/b1  principal: team-ops-1 (from key)"
    assert lines[1].endswith("(4 routes, backend cel-expr)")
    assert lines[2] == "celgate's rules do not govern this path: it is refused unless a route opens it"
    assert lines[3].split() == ["ROUTE", "MATCH", "WHEN"]
    assert lines[4].split() == ["allow-batches", "match", "true"]
    assert lines[5] == '    when: principal.team == "ops"'
    assert lines[6].split() == ["files-read", "no", "match:", "paths", "-"]
    assert "decision: allow by allow-batches: batch jobs for ops" in lines
    # opened: the request rules decide next, as in the proxy
    request_head = lines[lines.index("") + 1]
    assert request_head.startswith("point: request  subject: ") and "principal: team-ops-1" in request_head
    assert "route: not governed" in lines
    assert lines[-1] == "decision: allow by any-model: allowed by rule any-model"


def test_explain_a_refused_path(policies: Path) -> None:
    code, out = run("explain", str(policies), "--principal", "anonymous", "--path", "/v1/realtime")
    lines = out.splitlines()
    assert code == 0
    assert "shaky                 match                        error" in out and "    error: " in out
    assert "allow-batches         no match: paths, principals  -" in out
    assert "files-read            no match: paths, methods     -" in out
    assert lines[-2:] == [
        "decision: deny by default: no route opens this path",
        "message: celgate: POST /v1/realtime denied by policy (default): no route opens this path",
    ]


def test_explain_a_governed_path_explains_its_rules(policies: Path) -> None:
    code, out = run("explain", str(policies), "--principal", "anonymous", "--path", "/v1/responses", "--model", "m")
    assert code == 0 and out.startswith("point: request  subject: m") and "decision: allow by any-model" in out
    code, out = run("explain", str(policies), "--principal", "anonymous", "--path", "/v1/responses")
    assert (code, out) == (2, "error: request.model is required\n")
    code, out = run("explain", str(policies), "--principal", "x", "--path", "/v1/batches", "--tool", "t")
    assert code == 2 and "celgate decides tool calls only on the routes whose replies carry them" in out


def test_check_counts_routes(policies: Path) -> None:
    code, out = run("check", str(policies))
    assert code == 0 and out.startswith("ok: 1 rule, 4 routes in 1 file (version ")


def test_route_cases(policies: Path, tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        textwrap.dedent(
            """
            - name: ops batches
              key: sk-ops
              request: {path: /v1/batches, method: POST}
              expect: {effect: allow, rule: allow-batches}
            - name: realtime refused
              principal: anonymous
              request: {path: /v1/realtime, method: GET}
              expect: {effect: deny, rule: null}
            - name: a governed path still needs a model
              principal: anonymous
              request: {path: /v1/responses}
              expect: {effect: allow}
            - name: no tool calls on an ungoverned path
              principal: anonymous
              request: {path: /v1/batches}
              tool: {name: x}
              expect: {effect: deny}
            """
        )
    )
    code, out = run("test", str(policies), "--cases", str(cases))
    lines = out.splitlines()
    assert code == 1 and lines[-1] == "FAIL: 2/4"
    assert lines[1].startswith("PASS    ops batches") and lines[2].startswith("PASS    realtime refused")
    assert lines[3].startswith("ERROR") and lines[3].endswith("request.model is required")
    assert lines[4].startswith("ERROR") and "celgate decides tool calls only on the routes whose replies" in lines[4]
