"""``celgate policy check|test|explain``: tools for policy authors.

Also runs as ``python -m celgate.policy``. Exit codes: 0 success; 1 the policies do
not load, a test case fails or errors, or no case ran; 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

import yaml

from .backends import BACKENDS, DEFAULT_BACKEND
from .decision import Decision, Explanation
from .errors import PolicyLoadError
from .loader import load_policies
from .policyset import PolicySet
from .route_table import Kind, NonCanonicalPath, RouteMatch, classify
from .schema import ANONYMOUS, Effect, Point, Principal, RequestInfo, ToolCall

__all__ = ["CaseError", "build_request", "build_tool", "evaluate_case", "main", "read_cases", "route_of"]

_REQUEST_FIELDS = (
    "model", "agent", "stream", "path", "method", "headers", "tools", "tool_definitions", "user", "metadata",
)  # fmt: skip
_CASE_KEYS = ("name", "principal", "key", "request", "tool", "now", "expect")
_EXPECT_KEYS = ("effect", "rule", "mode")


class CaseError(ValueError):
    """A test case or command-line input that cannot be turned into a decision."""


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CaseError(f"{what} must be a mapping")
    return value


def route_of(method: str, path: str) -> RouteMatch:
    """The route the proxy would classify ``method path`` as (the same route table); non-canonical: an error."""
    try:
        return classify(method, path)
    except NonCanonicalPath as exc:
        raise CaseError(str(exc)) from None


def build_request(spec: Mapping[str, Any]) -> RequestInfo:
    """A RequestInfo from a case's ``request:``; keys other than the known fields become body scalars.

    ``model`` is required where the proxy requires it (creating a chat
    completion or a response); ``path`` is classified as the proxy does.
    """
    method = str(spec.get("method", "POST")).upper()
    route = route_of(method, str(spec.get("path", "/v1/chat/completions")))
    path = route.path
    model = spec.get("model") or ""
    if not isinstance(model, str):
        raise CaseError("request.model must be a string")
    if not model and route.requires_model:
        raise CaseError("request.model is required")
    headers = _mapping(spec.get("headers"), "request.headers")
    tools = spec.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
        raise CaseError("request.tools must be a list of names")
    definitions = spec.get("tool_definitions") or []
    if not isinstance(definitions, list) or not all(isinstance(d, Mapping) for d in definitions):
        raise CaseError("request.tool_definitions must be a list of mappings")
    scalars = {k: v for k, v in spec.items() if k not in _REQUEST_FIELDS}
    bad = [k for k, v in scalars.items() if v is not None and not isinstance(v, str | int | float | bool)]
    if bad:
        raise CaseError(f"request.{bad[0]}: only scalars may be given besides {', '.join(_REQUEST_FIELDS)}")
    metadata = spec.get("metadata")
    return RequestInfo(
        model=model,
        agent=spec.get("agent") or None,
        stream=bool(spec.get("stream", False)),
        path=path,
        headers={str(k).lower(): str(v) for k, v in headers.items()},
        tools=tuple(tools),
        scalars=scalars,
        user=spec.get("user"),
        metadata=dict(_mapping(metadata, "request.metadata")) if metadata is not None else None,
        tool_definitions=tuple(dict(d) for d in definitions),
        method=method,
    )


def build_tool(spec: Mapping[str, Any]) -> ToolCall:
    """A ToolCall from a case's ``tool:``; ``arguments`` may be a mapping (sent as JSON) or a raw string."""
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise CaseError("tool.name is required")
    arguments = spec.get("arguments", {})
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return ToolCall(
        name=name,
        raw_arguments=raw,
        id=str(spec.get("id", "call_test")),
        source=str(spec.get("source", "upstream")),
        type=str(spec.get("type", "function")),
        server=str(spec.get("server", "")),
    )


def _principal(policy: PolicySet, spec: Any) -> Principal:
    """A declared principal by id, or one spelled out as ``{id: ..., attribute: ...}``."""
    if isinstance(spec, str):
        return ANONYMOUS if spec == ANONYMOUS.id else policy.principals.get(spec, Principal(spec, {}))
    spec = _mapping(spec, "principal")
    if not isinstance(spec.get("id"), str):
        raise CaseError("principal needs an id")
    return Principal(spec["id"], {k: v for k, v in spec.items() if k != "id"})


def _parse_now(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            raise CaseError(f"now: not an ISO-8601 timestamp: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _load(args: argparse.Namespace, out: TextIO) -> PolicySet | None:
    try:
        return load_policies(args.dir, args.cel_backend)
    except PolicyLoadError as exc:
        for problem in exc.problems:
            print(problem, file=out)
        return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    policy = _load(args, out)
    if policy is None:
        return 1
    for warning in policy.warnings:
        print(f"{warning.file}:{warning.line}: {warning.rule}: warning: {warning.message}", file=out)
    routes = f", {_count(len(policy.routes), 'route')}" if policy.routes else ""
    counts = f"{_count(policy.rule_count, 'rule')}{routes} in {_count(len(policy.files), 'file')}"
    print(f"ok: {counts} (version {policy.version}, backend {policy.backend})", file=out)
    return 0


@dataclass(frozen=True)
class _CaseResult:
    status: str  # PASS | FAIL | ERROR
    name: str
    expected: str
    got: str


def _describe(decision: Decision) -> str:
    effect = "would deny" if decision.would_deny else decision.effect.value
    return f"{effect} by {decision.rule or 'default'}"


def _expected(expect: Mapping[str, Any]) -> str:
    text = str(expect.get("effect", "?"))
    if "rule" in expect:
        text += f" by {expect['rule'] or 'default'}"
    if "mode" in expect:
        text += f" ({expect['mode']})"
    return text


def _check_expectation(decision: Decision, expect: Mapping[str, Any]) -> bool:
    if decision.effect.value != expect["effect"]:
        return False
    if "rule" in expect and decision.rule != expect["rule"]:
        return False
    return "mode" not in expect or decision.mode.value == expect["mode"]


def _expectation(case: Mapping[str, Any]) -> Mapping[str, Any]:
    expect = _mapping(case.get("expect"), "expect")
    if expect.get("effect") not in ("allow", "deny") or set(expect) - set(_EXPECT_KEYS):
        raise CaseError("expect needs effect: allow|deny (and optionally rule, mode)")
    return expect


def evaluate_case(policy: PolicySet, case: Any, *, explain: bool = False) -> Decision:
    """The decision for one test case (its ``expect`` is not consulted); raises ``CaseError``.

    The points are the proxy's for the case's route (``RouteMatch.points``): a
    path celgate does not govern is first decided by routes (point ``route``),
    then, once opened, by request rules; the first denial is the case's
    decision, else the route that opened it. ``explain=True`` decides through
    the explain path (every rule, no caches).
    """
    case = _mapping(case, "each case")
    unknown = sorted(set(case) - set(_CASE_KEYS))
    if unknown:
        raise CaseError(f"unknown key {unknown[0]!r} (known: {', '.join(_CASE_KEYS)})")
    if "key" in case:
        principal = policy.resolve_principal(str(case["key"]))
    else:
        principal = _principal(policy, case.get("principal", ANONYMOUS.id))
    request = build_request(_mapping(case.get("request"), "request"))
    now = _parse_now(case.get("now"))
    tool = build_tool(_mapping(case["tool"], "tool")) if case.get("tool") is not None else None
    points = route_of(request.method, request.path).points
    if tool is not None:
        _check_carries_calls(points, request, "tool")
    if Point.ROUTE in points:
        route = (
            policy.explain_route(principal, request, now=now).decision
            if explain
            else policy.open_route(principal, request, now=now)
        )
        if route.effect is Effect.DENY:
            return route
        admitted = (
            policy.explain(Point.REQUEST, principal, request, None, now=now).decision
            if explain
            else policy.check_request(principal, request, now=now)
        )
        return admitted if admitted.effect is Effect.DENY else route
    if explain:
        point = Point.REQUEST if tool is None else Point.TOOL_CALL
        return policy.explain(point, principal, request, tool, now=now).decision
    if tool is None:
        return policy.check_request(principal, request, now=now)
    return policy.check_tool_call(principal, request, tool, now=now)


def _check_carries_calls(points: tuple[Point, ...], request: RequestInfo, what: str) -> None:
    if Point.TOOL_CALL not in points:
        raise CaseError(
            f"{what}: celgate decides tool calls only on the routes whose replies carry them,"
            f" not {request.method} {request.path}"
        )


def _case_name(case: Any) -> str:
    return str(case.get("name", "?")) if isinstance(case, Mapping) else "?"


def _run_case(policy: PolicySet, case: Any) -> _CaseResult:
    name = _case_name(case)
    try:
        expect = _expectation(_mapping(case, "each case"))
        decision = evaluate_case(policy, case)
    except CaseError as exc:
        return _CaseResult("ERROR", name, "-", str(exc))
    status = "PASS" if _check_expectation(decision, expect) else "FAIL"
    got = _describe(decision) + "".join(f" [error in {r}: {m}]" for r, m in decision.errors)
    return _CaseResult(status, name, _expected(expect), got)


def read_cases(path: Path) -> list[Any]:
    """The cases of a YAML cases file: a list, or a mapping with ``cases:``."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CaseError(f"{path}: {exc}") from None
    cases = document.get("cases") if isinstance(document, Mapping) else document
    if not isinstance(cases, list):
        raise CaseError(f"{path}: expected a list of cases (or a mapping with `cases:`)")
    return cases


def _print_table(rows: Sequence[Sequence[str]], out: TextIO, notes: Sequence[Sequence[str]] = ()) -> None:
    """Aligned columns; ``notes[i]`` are extra indented lines printed under ``rows[i]``."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for i, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)
        for note in notes[i] if i < len(notes) else ():
            print(f"    {note}", file=out)


def _cmd_test(args: argparse.Namespace, out: TextIO) -> int:
    policy = _load(args, out)
    if policy is None:
        return 1
    try:
        wanted = re.compile(args.run or "")
    except re.error as exc:
        print(f"error: --run: {exc}", file=out)
        return 2
    try:
        cases = read_cases(Path(args.cases))
    except CaseError as exc:
        print(exc, file=out)
        return 1
    results = [_run_case(policy, case) for case in cases if wanted.search(_case_name(case))]
    if not results:
        print("no test cases ran", file=out)
        return 1
    _print_table(
        [("RESULT", "CASE", "EXPECTED", "GOT"), *((r.status, r.name, r.expected, r.got) for r in results)], out
    )
    passed = sum(r.status == "PASS" for r in results)
    print(f"{'PASS' if passed == len(results) else 'FAIL'}: {passed}/{len(results)}", file=out)
    return 0 if passed == len(results) else 1


def _key_value(text: str, option: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise CaseError(f"{option} expects KEY=VALUE, got {text!r}")
    return key, value


def _explain_inputs(policy: PolicySet, args: argparse.Namespace) -> tuple[Principal, str, RequestInfo, ToolCall | None]:
    if args.key is not None:
        principal = policy.resolve_principal(args.key)
        note = "from key" if principal is not ANONYMOUS else "unknown key"
    else:
        principal = _principal(policy, args.principal)
        if principal is ANONYMOUS:
            note = "no key"
        else:
            note = "declared" if principal.id in policy.principals else "not declared: no attributes"
    spec: dict[str, Any] = {"model": args.model, "agent": args.agent, "stream": args.stream, "method": args.method}
    if args.path is not None:
        spec["path"] = args.path
    spec["headers"] = dict(_key_value(h, "--header") for h in args.header)
    for item in args.scalar:
        key, value = _key_value(item, "--scalar")
        try:
            spec[key] = json.loads(value)
        except ValueError:
            spec[key] = value
    if args.tool is not None:
        spec["tools"] = [args.tool]
    request = build_request(spec)
    tool = None
    if args.tool is not None:
        _check_carries_calls(route_of(request.method, request.path).points, request, "--tool")
        tool = build_tool({"name": args.tool, "arguments": args.args, "type": args.tool_type})
    return principal, note, request, tool


def _print_explanation(explanation: Explanation, out: TextIO, kind: Literal["rule", "route"] = "rule") -> None:
    heading = ("ROUTE", "MATCH", "WHEN") if kind == "route" else ("RULE", "EFFECT", "MODE", "GLOBS", "WHEN")
    rows: list[tuple[str, ...]] = [heading]
    notes: list[list[str]] = [[]]
    for trace in explanation.rules:
        globs = "match" if trace.candidate else "no match: " + ", ".join(trace.mismatched)
        if kind == "route":
            rows.append((trace.rule, globs, trace.outcome))
        else:
            rows.append((trace.rule, trace.effect.value, trace.mode.value, globs, trace.outcome))
        lines = [f"when: {' '.join(trace.when.split())}"] if trace.candidate and trace.when else []
        notes.append(lines + ([f"error: {trace.error}"] if trace.error else []))
    if len(rows) == 1:
        print("(no routes in this policy)" if kind == "route" else "(no rules for this point)", file=out)
    else:
        _print_table(rows, out, notes)
    decision = explanation.decision
    print(f"decision: {_describe(decision)}: {decision.reason}", file=out)
    if decision.message:
        print(f"message: {decision.message}", file=out)


def _cmd_explain(args: argparse.Namespace, out: TextIO) -> int:
    policy = _load(args, out)
    if policy is None:
        return 1
    try:
        principal, note, request, tool = _explain_inputs(policy, args)
        now = _parse_now(args.now)
    except CaseError as exc:
        print(f"error: {exc}", file=out)
        return 2
    route = route_of(request.method, request.path)
    if Point.ROUTE in route.points:
        explanation = policy.explain_route(principal, request, now=now)
        print(f"point: route  subject: {explanation.decision.subject}  principal: {principal.id} ({note})", file=out)
        print(f"policy: {policy.version} ({_count(len(policy.routes), 'route')}, backend {policy.backend})", file=out)
        print("celgate's rules do not govern this path: it is refused unless a route opens it", file=out)
        _print_explanation(explanation, out, "route")
        if explanation.decision.effect is Effect.DENY:
            return 0
        print("", file=out)  # opened: the request rules decide next, as in the proxy
    point = Point.TOOL_CALL if tool is not None else Point.REQUEST
    explanation = policy.explain(point, principal, request, tool, now=now)
    subject = explanation.decision.subject
    print(f"point: {point.value}  subject: {subject}  principal: {principal.id} ({note})", file=out)
    print(f"policy: {policy.version} ({_count(policy.rule_count, 'rule')}, backend {policy.backend})", file=out)
    print(f"route: {route.kind.value}" + (f" ({route.name})" if route.kind is Kind.GOVERNED else ""), file=out)
    _print_explanation(explanation, out)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="celgate policy",
        description="Check, test and explain celgate policies.",
        epilog="Exit codes: 0 ok; 1 policies don't load, a case fails or errors, or no case ran; 2 bad usage.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{check,test,explain}")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("dir", nargs="?", default="policies", help="policy directory (default: ./policies)")
        sub.add_argument("--cel-backend", choices=list(BACKENDS), default=DEFAULT_BACKEND, help="CEL engine")
        return sub

    command("check", "Load and compile every policy file; print each problem as file:line: rule: message.")
    test = command("test", "Run table-driven cases (principal/request/tool in, expected effect/rule out).")
    test.add_argument("--cases", required=True, help="YAML file with a list of cases")
    test.add_argument("--run", metavar="REGEX", help="only run cases whose name matches REGEX")
    explain = command(
        "explain",
        "Show every rule of a decision point, how it matched, and the decision; "
        "for a path celgate does not govern, every route entry and whether one opens it.",
    )
    who = explain.add_mutually_exclusive_group(required=True)
    who.add_argument("--key", help="API key, resolved to a principal as the proxy would")
    who.add_argument("--principal", help="principal id (declared attributes are used)")
    explain.add_argument("--model", help="the request's model (required to create a chat completion or a response)")
    explain.add_argument(
        "--path", help="canonical request path, classified as the proxy does (default /v1/chat/completions)"
    )
    explain.add_argument("--method", default="POST", help="HTTP method (default POST)")
    explain.add_argument("--agent", help="agent name (drop-in agent or x-celgate-agent)")
    explain.add_argument("--stream", action="store_true")
    explain.add_argument("--tool", help="explain a tool call of this name instead of the request")
    explain.add_argument("--args", default="{}", help="tool call arguments: JSON, or a custom tool's text (default {})")
    explain.add_argument("--tool-type", default="function", help="tool.type of the call (default function)")
    explain.add_argument("--header", action="append", default=[], metavar="NAME=VALUE")
    explain.add_argument(
        "--scalar", action="append", default=[], metavar="NAME=JSON", help="a body field, e.g. max_tokens=4096"
    )
    explain.add_argument("--now", help="evaluation time, ISO-8601 (default: now)")
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Run ``celgate policy ...`` with ``argv`` (the arguments after ``policy``); returns the exit code."""
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
    handlers = {"check": _cmd_check, "test": _cmd_test, "explain": _cmd_explain}
    return handlers[args.command](args, out or sys.stdout)
