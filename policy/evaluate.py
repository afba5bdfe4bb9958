"""The evaluator: candidates → ``when`` outcomes → one decision. Pure: no I/O, no logging.

Precedence, in order (one chain, first match wins; "first" means policy order):

1. an enforcing deny rule matched, or errored → **deny** (deny overrides; errors fail closed);
2. a dry-run deny rule matched or errored, and what would otherwise apply is not an
   enforced deny → **would deny** (``effect=deny, mode=dry-run``; traffic passes);
3. an allow rule matched → **allow** (an allow rule that errored never allows);
4. otherwise ``defaults.decision``, in ``defaults.mode``.

The fast path (``decide``) works from a ``Plan``, derived once per candidate
set and memoized with it by the glob index: rules without ``when`` match
outright; rules that read only stable fields (``principal.team``,
``request.model``, ...) have their outcomes cached per snapshot, keyed by the
values they read, with one lookup per decision; only the rest ("live" rules)
run CEL, over an activation built once with just the variables they read.
The combined verdict is memoized per outcome pattern. ``explain`` is the slow
path of the same evaluator: every rule of the point, no caches.

Routes (``open_route``) decide paths celgate does not govern: the first entry
in policy order whose lists match and whose ``when`` is true opens the path;
a ``when`` that errors does not open it. No entry: refused, in ``defaults.mode``.

The evaluator reads a policy snapshot through the ``Snapshot`` protocol, so it
does not depend on ``PolicySet``, which builds on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import perf_counter, time
from typing import Any, NamedTuple, Protocol

from .backends import Backend
from .candidates import CandidateIndex, mismatched_lists, mismatched_route_lists
from .context import (
    LONE_SURROGATE,
    UNREADABLE,
    principal_value,
    principal_variables,
    read_arguments,
    request_reader,
    request_variables,
    tool_variables,
)
from .decision import Decision, Explanation, RuleTrace
from .errors import CelEvalError
from .names import MAX_NAME_LENGTH, name_problem
from .schema import Action, Defaults, Effect, Mode, Point, Principal, RequestInfo, Route, Rule, ToolCall

__all__ = ["Outcome", "Plan", "ResultCache", "Snapshot", "decide", "explain", "explain_route", "open_route"]

Outcome = bool | str  # True, False, or the CEL error message (fails closed)

_MISSING = object()
_DEFAULT_REASON = {Effect.DENY: "no rule allows it", Effect.ALLOW: "allowed by default"}
_MAX_VERDICTS = 256  # distinct outcome patterns remembered per candidate set
_MAX_PRINCIPAL_KEYS = 16  # principal objects whose key parts are remembered per candidate set


class ResultCache:
    """Outcomes of cacheable rules, keyed by (prefix token, values read); emptied when full.

    A key starts with a small int standing for (rule indexes, the principal's values read): tuples
    do not cache their hash, so hashing that part anew on every decision cost more than the lookup.
    A token is never reused, so one a plan remembers keeps its meaning after the cache is emptied.
    """

    __slots__ = ("_entries", "_max_entries", "_next_token", "_tokens")

    def __init__(self, max_entries: int = 4096) -> None:
        self._entries: dict[tuple[Any, ...], tuple[Outcome, ...]] = {}
        self._max_entries = max_entries
        self._tokens: dict[tuple[Any, ...], int] = {}
        self._next_token = 0

    def get(self, key: tuple[Any, ...]) -> tuple[Outcome, ...] | None:
        return self._entries.get(key)

    def put(self, key: tuple[Any, ...], outcomes: tuple[Outcome, ...]) -> None:
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[key] = outcomes

    def token(self, prefix: tuple[Any, ...]) -> int:
        """The int standing for ``prefix`` in keys (equal prefixes share one while it is remembered)."""
        token = self._tokens.get(prefix)
        if token is None:
            if len(self._tokens) >= self._max_entries:
                self._tokens.clear()
            token = self._tokens[prefix] = self._next_token
            self._next_token += 1
        return token

    def __len__(self) -> int:
        return len(self._entries)


class _Verdict(NamedTuple):
    """Everything in a Decision that follows from the outcomes (not the timing)."""

    effect: Effect
    mode: Mode
    rule: str | None
    reason: str
    action: Action
    matched: tuple[str, ...]
    errors: tuple[tuple[str, str], ...]
    message: str


class _Matches(NamedTuple):
    """The first rule of each kind that decides, plus what matched and what failed."""

    enforced_deny: Rule | None
    dry_deny: Rule | None
    allow: Rule | None
    matched: tuple[str, ...]
    errors: tuple[tuple[str, str], ...]


def _classify(rules: tuple[Rule, ...], outcomes: tuple[Outcome, ...]) -> _Matches:
    matched: list[str] = []
    errors: list[tuple[str, str]] = []
    firsts: dict[str, Rule] = {}
    for rule, outcome in zip(rules, outcomes, strict=True):
        if outcome is False:
            continue
        if outcome is True:
            matched.append(rule.name)
        else:
            errors.append((rule.name, outcome))
            if rule.effect is Effect.ALLOW:
                continue  # an erroring allow rule never allows
        if rule.effect is Effect.ALLOW:
            kind = "allow"
        else:  # a deny rule that matched or errored (fails closed)
            kind = "enforced_deny" if rule.mode is Mode.ENFORCE else "dry_deny"
        firsts.setdefault(kind, rule)
    return _Matches(
        firsts.get("enforced_deny"), firsts.get("dry_deny"), firsts.get("allow"), tuple(matched), tuple(errors)
    )


def _verdict(rules: tuple[Rule, ...], outcomes: tuple[Outcome, ...], defaults: Defaults, subject: str) -> _Verdict:
    """Apply the precedence chain in the module docstring."""
    found = _classify(rules, outcomes)
    default_blocks = defaults.decision is Effect.DENY and defaults.mode is Mode.ENFORCE
    deciding: Rule | None
    if found.enforced_deny is not None:
        deciding, effect, mode = found.enforced_deny, Effect.DENY, Mode.ENFORCE
    elif found.dry_deny is not None and (found.allow is not None or not default_blocks):
        deciding, effect, mode = found.dry_deny, Effect.DENY, Mode.DRY_RUN
    elif found.allow is not None:
        deciding, effect, mode = found.allow, Effect.ALLOW, found.allow.mode
    else:
        deciding, effect, mode = None, defaults.decision, defaults.mode

    name = deciding.name if deciding is not None else None
    reason = deciding.reason if deciding is not None else _DEFAULT_REASON[effect]
    message = ""
    if effect is Effect.DENY:
        unreadable = next((o for o in outcomes if isinstance(o, str) and o.startswith(UNREADABLE)), None)
        reason = reason if unreadable is None else f"{reason} ({unreadable})"
        message = defaults.deny_message.format(subject=subject, rule=name or "default", reason=reason)
    action = deciding.action if deciding is not None else Action.STRIP
    return _Verdict(effect, mode, name, reason, action, found.matched, found.errors, message)


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    """How to decide for one candidate set; built once, memoized with it by the glob index.

    ``cached``/``live`` are positions in ``rules`` of rules whose outcome is
    cached by value (``key_fields`` is the union of what they read, by root) or
    evaluated every time (``live_roots`` is what they read); the remaining
    positions are rules without ``when``.
    """

    rules: tuple[Rule, ...]
    defaults: Defaults
    cached: tuple[int, ...]
    cache_id: tuple[int, ...]
    key_fields: tuple[tuple[str, tuple[str, ...]], ...]
    live: tuple[int, ...]
    live_roots: frozenset[str]
    reads_arguments: bool
    usable: bool
    verdicts: dict[tuple[Any, ...], _Verdict] = field(default_factory=dict)
    request_readers: tuple[Callable[[RequestInfo], Any], ...] = ()
    principal_tokens: dict[int, tuple[Principal, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, rules: tuple[Rule, ...], defaults: Defaults) -> Plan:
        with_when = [i for i, rule in enumerate(rules) if rule.program is not None]
        cached = tuple(i for i in with_when if rules[i].cache_paths is not None)
        live = tuple(i for i in with_when if rules[i].cache_paths is None)
        default_passes = defaults.decision is Effect.ALLOW or defaults.mode is Mode.DRY_RUN
        may_allow = any(rule.effect is Effect.ALLOW for rule in rules)
        always_denied = any(
            rule.effect is Effect.DENY and rule.mode is Mode.ENFORCE and rule.program is None for rule in rules
        )
        key_fields = _group_by_root({path for i in cached for path in rules[i].cache_paths or ()})
        read = dict(key_fields).get("request", ())
        return cls(
            rules=rules,
            defaults=defaults,
            cached=cached,
            cache_id=tuple(rules[i].index for i in cached),
            key_fields=key_fields,
            live=live,
            live_roots=frozenset(root for i in live for root in rules[i].roots),
            reads_arguments=any(rule.reads_arguments for rule in rules),
            usable=(may_allow or default_passes) and not always_denied,
            request_readers=tuple(request_reader(name, _MISSING) for name in read),
        )

    def verdict(self, outcomes: tuple[Outcome, ...], subject: str) -> _Verdict:
        key = (outcomes, subject)
        verdict = self.verdicts.get(key)
        if verdict is None:
            verdict = _verdict(self.rules, outcomes, self.defaults, subject)
            if len(self.verdicts) < _MAX_VERDICTS:
                self.verdicts[key] = verdict
        return verdict


class Snapshot(Protocol):
    """What the evaluator reads of a compiled policy set (``PolicySet`` provides it)."""

    @property
    def index(self) -> CandidateIndex[Plan]: ...
    @property
    def results(self) -> ResultCache: ...
    @property
    def engine(self) -> Backend | None: ...
    @property
    def defaults(self) -> Defaults: ...
    @property
    def version(self) -> str: ...
    @property
    def routes(self) -> tuple[Route, ...]: ...
    @property
    def unrouted(self) -> Effect: ...


def _group_by_root(paths: set[tuple[str, str]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    roots = sorted({root for root, _ in paths})
    return tuple((root, tuple(sorted(f for r, f in paths if r == root))) for root in roots)


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a context value; types are kept apart (``1``, ``1.0`` and ``true`` differ in CEL)."""
    kind = type(value)
    if kind is str:
        return value
    if kind is list or kind is tuple:
        return (list, tuple(map(_freeze, value)))
    if kind is dict:
        return (dict, frozenset((k, _freeze(v)) for k, v in value.items()))
    return (kind, value)


class _Inputs:
    """One decision's CEL variables, each built on first use.

    ``now`` is read from one clock reading, so the second a cached outcome is keyed by (``second``)
    is the second of the ``now`` its rules were evaluated with.
    """

    __slots__ = (
        "_arguments_problem",
        "_backend",
        "_clock",
        "_full",
        "_now",
        "_roots",
        "_tool",
        "principal",
        "request",
    )

    def __init__(
        self,
        backend: Backend | None,
        principal: Principal,
        request: RequestInfo,
        tool: ToolCall | None,
        now: datetime | None,
    ) -> None:
        self._backend = backend
        self.principal = principal
        self.request = request
        self._tool = tool
        self._now = now
        self._clock: float | None = None
        self._roots: dict[str, Any] = {}
        self._full: Any = None
        self._arguments_problem: str | None = None

    def second(self) -> Any:
        """The key of ``now``'s second, for outcomes cached per second."""
        if self._now is not None:
            return self._now.replace(microsecond=0)
        if self._clock is None:
            self._clock = time()
        return int(self._clock)

    def root(self, name: str) -> Any:
        variables = self._roots.get(name)
        if variables is None:
            if name == "principal":
                variables = principal_variables(self.principal)
            elif name == "request":
                variables = request_variables(self.request)
            elif name == "now":
                if self._now is None and self._clock is None:
                    self._clock = time()
                variables = self._now or datetime.fromtimestamp(self._clock or 0.0, UTC)
            else:
                assert self._tool is not None, "request rules cannot read tool (the loader rejects them)"
                arguments, self._arguments_problem = read_arguments(self._tool.raw_arguments, self._tool.type)
                variables = tool_variables(self._tool, arguments)
            self._roots[name] = variables
        return variables

    def unreadable(self, rule: Rule) -> str | None:
        """Why ``rule`` cannot read this call's arguments (then it fails, closed), or None."""
        if not rule.reads_arguments:
            return None
        self.root("tool")
        problem = self._arguments_problem
        if problem is None or (not rule.parses_arguments and problem != LONE_SURROGATE):
            return None
        return f"{UNREADABLE}: {problem}"

    def activation(self, roots: frozenset[str] | None = None) -> Any:
        """An activation over ``roots``, or over every variable of this point (built at most once)."""
        assert self._backend is not None, "a set without a CEL backend has no rules"
        if roots is not None and self._full is None:
            return self._backend.activation({name: self.root(name) for name in roots})
        if self._full is None:
            names = (
                ("principal", "request", "now", "tool") if self._tool is not None else ("principal", "request", "now")
            )
            self._full = self._backend.activation({name: self.root(name) for name in names})
        return self._full


def _run(entry: Rule | Route, activation: Any) -> Outcome:
    assert entry.program is not None
    try:
        return entry.program.decide(activation)
    except CelEvalError as exc:
        return str(exc) or "evaluation error"


def _cached_outcomes(plan: Plan, inputs: _Inputs, cache: ResultCache) -> tuple[Outcome, ...]:
    parts: list[Any] = [_prefix_token(plan, inputs.principal, cache)]
    for root, fields in plan.key_fields:
        if root == "now":  # the one field of now is NOW_SECOND
            parts.append(inputs.second())
        elif root == "request":
            request = inputs.request
            parts += [_freeze(read(request)) for read in plan.request_readers]
        elif root != "principal":  # the principal's part is in the token
            variables = inputs.root(root)
            parts += [_freeze(variables.get(name, _MISSING)) for name in fields]
    key = tuple(parts)
    outcomes = cache.get(key)
    if outcomes is None:
        activation = inputs.activation()
        outcomes = tuple(_run(plan.rules[i], activation) for i in plan.cached)
        cache.put(key, outcomes)
    return outcomes


def _prefix_token(plan: Plan, principal: Principal, cache: ResultCache) -> int:
    """The token for (cached rules, the principal's values they read), remembered per plan: principals are immutable."""
    known = plan.principal_tokens.get(id(principal))
    if known is not None and known[0] is principal:  # the same object, not one that reused its address
        return known[1]
    fields = dict(plan.key_fields).get("principal", ())
    token = cache.token((plan.cache_id, *(_freeze(principal_value(principal, name, _MISSING)) for name in fields)))
    if len(plan.principal_tokens) < _MAX_PRINCIPAL_KEYS:
        plan.principal_tokens[id(principal)] = (principal, token)
    return token


def _decision(point: Point, v: _Verdict, subject: str, version: str, started: float) -> Decision:
    return Decision(
        point, v.effect, v.mode, v.rule, v.reason, v.action, v.matched, v.errors,
        perf_counter() - started, subject, v.message, version,
    )  # fmt: skip


_NAME_RULES = {"tool": "celgate:tool-name", "model": "celgate:model-name"}


def _implausible_subject(request: RequestInfo, tool: ToolCall | None) -> str:
    """The subject of a decision on an implausible name: the name, cut to a bounded length."""
    return (tool.name if tool is not None else request.model)[:MAX_NAME_LENGTH]


def _implausible_name(point: Point, request: RequestInfo, tool: ToolCall | None, defaults: Defaults) -> _Verdict | None:
    """A denial, before any rule, of a tool or model name an app or upstream might read as another name."""
    if tool is not None:
        kind, problem = "tool", name_problem(tool.name)
    elif point is Point.REQUEST and request.model:
        kind, problem = "model", name_problem(request.model)
    else:
        return None
    if problem is None:
        return None
    rule, reason = _NAME_RULES[kind], f"not a plausible {kind} name: {problem}"
    message = defaults.deny_message.format(subject=_implausible_subject(request, tool), rule=rule, reason=reason)
    return _Verdict(Effect.DENY, Mode.ENFORCE, rule, reason, Action.STRIP, (), (), message)


def decide(
    policy: Snapshot,
    point: Point,
    principal: Principal,
    request: RequestInfo,
    tool: ToolCall | None = None,
    *,
    now: datetime | None = None,
) -> Decision:
    """Decide one point on the fast path (memoized plan, cached outcomes, one activation)."""
    started = perf_counter()
    tool_name = tool.name if tool is not None else ""
    implausible = _implausible_name(point, request, tool, policy.defaults)
    if implausible is not None:
        return _decision(point, implausible, _implausible_subject(request, tool), policy.version, started)
    plan: Plan = policy.index.lookup(point, principal.id, request.model, request.agent or "", tool_name)
    outcomes: list[Outcome] = [True] * len(plan.rules)
    if plan.cached or plan.live:
        inputs = _Inputs(policy.engine, principal, request, tool, now)
        if plan.cached:
            for i, outcome in zip(plan.cached, _cached_outcomes(plan, inputs, policy.results), strict=True):
                outcomes[i] = outcome
        if plan.live:
            activation = inputs.activation(plan.live_roots)
            for i in plan.live:
                rule = plan.rules[i]
                outcomes[i] = inputs.unreadable(rule) or _run(rule, activation)
    subject = tool_name or request.model
    return _decision(point, plan.verdict(tuple(outcomes), subject), subject, policy.version, started)


def _shown(entry: Rule | Route, outcome: Outcome | None) -> tuple[str, str | None]:
    """A trace's ``outcome`` column and error message."""
    if outcome is None:
        return "-", None
    if entry.program is None:
        return "no when", None
    if isinstance(outcome, bool):
        return str(outcome).lower(), None
    return "error", outcome


def _trace(rule: Rule, mismatched: tuple[str, ...], outcome: Outcome | None) -> RuleTrace:
    shown, error = _shown(rule, outcome)
    return RuleTrace(rule.name, rule.effect, rule.mode, rule.file, rule.line, mismatched, rule.when, shown, error)


def explain(
    policy: Snapshot,
    point: Point,
    principal: Principal,
    request: RequestInfo,
    tool: ToolCall | None = None,
    *,
    now: datetime | None = None,
) -> Explanation:
    """Every rule of the point with its glob and ``when`` results, and the decision; no caches."""
    started = perf_counter()
    tool_name = tool.name if tool is not None else ""
    inputs = _Inputs(policy.engine, principal, request, tool, now)
    traces: list[RuleTrace] = []
    rules: list[Rule] = []
    outcomes: list[Outcome] = []
    for rule in policy.index.rules(point):
        mismatched = mismatched_lists(rule, principal.id, request.model, request.agent or "", tool_name)
        outcome: Outcome | None = None
        if not mismatched:
            outcome = True if rule.program is None else inputs.unreadable(rule) or _run(rule, inputs.activation())
            rules.append(rule)
            outcomes.append(outcome)
        traces.append(_trace(rule, mismatched, outcome))
    subject = tool_name or request.model
    verdict = _implausible_name(point, request, tool, policy.defaults) or _verdict(
        tuple(rules), tuple(outcomes), policy.defaults, subject
    )
    if verdict.rule in _NAME_RULES.values():
        subject = _implausible_subject(request, tool)
    return Explanation(_decision(point, verdict, subject, policy.version, started), tuple(traces))


def _route_subject(request: RequestInfo) -> str:
    return f"{request.method} {request.path}"


def _route_traces(
    policy: Snapshot, principal: Principal, request: RequestInfo, now: datetime | None
) -> tuple[Route | None, list[RuleTrace], list[str], list[tuple[str, str]]]:
    """Every route entry against the request: the first that opens it, traces, matched ids, errors."""
    inputs: _Inputs | None = None
    opened: Route | None = None
    traces: list[RuleTrace] = []
    matched: list[str] = []
    errors: list[tuple[str, str]] = []
    for route in policy.routes:
        mismatched = mismatched_route_lists(route, principal.id, request.method, request.path)
        outcome: Outcome | None = None
        if not mismatched:
            if route.program is None:
                outcome = True
            else:
                inputs = inputs or _Inputs(policy.engine, principal, request, None, now)
                outcome = _run(route, inputs.activation(route.roots))
            if outcome is True:
                matched.append(route.id)
                opened = opened or route
            elif outcome is not False:
                errors.append((route.id, outcome))
        traces.append(_route_trace(route, mismatched, outcome, policy.defaults.mode))
    return opened, traces, matched, errors


def _route_trace(route: Route, mismatched: tuple[str, ...], outcome: Outcome | None, mode: Mode) -> RuleTrace:
    shown, error = _shown(route, outcome)
    return RuleTrace(route.id, Effect.ALLOW, mode, route.file, route.line, mismatched, route.when, shown, error)


def explain_route(
    policy: Snapshot, principal: Principal, request: RequestInfo, *, now: datetime | None = None
) -> Explanation:
    """Every route entry with its list and ``when`` results, and whether the path opens (point ``route``)."""
    started = perf_counter()
    opened, traces, matched, errors = _route_traces(policy, principal, request, now)
    defaults = policy.defaults
    subject = _route_subject(request)
    if opened is not None:
        effect, rule, reason = Effect.ALLOW, opened.id, opened.reason
    elif policy.unrouted is Effect.ALLOW:
        effect, rule, reason = Effect.ALLOW, None, _DEFAULT_REASON[Effect.ALLOW]
    else:
        effect, rule, reason = Effect.DENY, None, "no route opens this path"
    message = ""
    if effect is Effect.DENY:
        message = defaults.deny_message.format(subject=subject, rule="default", reason=reason)
    verdict = _Verdict(effect, defaults.mode, rule, reason, Action.STRIP, tuple(matched), tuple(errors), message)
    return Explanation(_decision(Point.ROUTE, verdict, subject, policy.version, started), tuple(traces))


def open_route(
    policy: Snapshot, principal: Principal, request: RequestInfo, *, now: datetime | None = None
) -> Decision:
    """Whether a route entry opens this ungoverned request's path; ``rule`` names it (None: refused)."""
    return explain_route(policy, principal, request, now=now).decision
