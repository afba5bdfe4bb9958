"""``PolicySet``: one compiled, immutable policy snapshot, safe to share between requests."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from .backends import Backend
from .candidates import CandidateIndex, mismatched_lists
from .decision import Decision, Explanation
from .errors import Problem
from .evaluate import Plan, ResultCache, decide, explain, explain_route, open_route
from .names import name_problem
from .schema import ANONYMOUS, Defaults, Effect, Point, Principal, RequestInfo, Route, Rule, ToolCall

__all__ = ["PolicySet", "iso_seconds"]

_MAX_HEADER_ANSWERS = 4096  # (principal, model, agent) answers remembered per snapshot; models come from clients


def iso_seconds(timestamp: float) -> str:
    """A POSIX timestamp as ISO-8601 UTC to the second, as ``/admin/policies`` shows times."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class PolicySet:
    """A compiled policy set. Reloads build a new one; nothing here changes after construction
    except its private memo and result caches (cleared with the snapshot, never shared).
    """

    def __init__(
        self,
        *,
        rules: Iterable[Rule],
        principals: Mapping[str, Principal],
        keys: Mapping[str, Principal],
        defaults: Defaults,
        engine: Backend | None,
        version: str,
        files: tuple[str, ...],
        warnings: tuple[Problem, ...] = (),
        routes: Iterable[Route] = (),
        unrouted: Effect = Effect.DENY,
    ) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.routes: tuple[Route, ...] = tuple(routes)
        self.unrouted = unrouted  # what happens to an ungoverned path no route opens
        self.principals = principals  # id -> principal, every declared one
        self._keys = keys  # sha256 hex of a key -> principal
        self._known: dict[str, Principal] = {}  # key -> its declared principal, hashed once per snapshot
        self.defaults = defaults
        self.engine = engine
        self.backend = engine.name if engine is not None else "none"
        self.version = version
        self.files = files
        self.rule_count = len(self.rules)
        self.loaded_at = time.time()
        self.warnings = warnings
        self.index: CandidateIndex[Plan] = CandidateIndex(self.rules, lambda rules: Plan.of(rules, defaults))
        self.results = ResultCache()
        self._header_rules = tuple(rule for rule in self.rules if rule.reads_headers)
        self._headers_read: dict[tuple[str, str, str], bool] = {}

    @classmethod
    def allow_all(cls) -> PolicySet:
        """For ``--no-policy``: no rules, no principals, every decision allows (rule None), every path opens."""
        defaults = Defaults(decision=Effect.ALLOW)
        return cls(
            rules=(), principals={}, keys={}, defaults=defaults, engine=None, version="allow-all", files=(),
            unrouted=Effect.ALLOW,
        )  # fmt: skip

    def resolve_principal(self, api_key: str | None) -> Principal:
        """The principal whose key hashes to sha256(api_key); ANONYMOUS for none or an unknown key.

        A declared principal's key is hashed once per snapshot (at most one key per declared hash is kept);
        unknown keys are hashed every time, so a client sending random keys grows nothing.
        """
        if not api_key or not self._keys:
            return ANONYMOUS
        principal = self._known.get(api_key)
        if principal is None:
            principal = self._keys.get(hashlib.sha256(api_key.encode()).hexdigest(), ANONYMOUS)
            if principal is not ANONYMOUS:
                self._known[api_key] = principal
        return principal

    def check_request(self, principal: Principal, request: RequestInfo, *, now: datetime | None = None) -> Decision:
        return decide(self, Point.REQUEST, principal, request, now=now)

    def check_tool_call(
        self, principal: Principal, request: RequestInfo, tool: ToolCall, *, now: datetime | None = None
    ) -> Decision:
        return decide(self, Point.TOOL_CALL, principal, request, tool, now=now)

    def explain(
        self,
        point: Point,
        principal: Principal,
        request: RequestInfo,
        tool: ToolCall | None,
        *,
        now: datetime | None = None,
    ) -> Explanation:
        return explain(self, point, principal, request, tool, now=now)

    def open_route(self, principal: Principal, request: RequestInfo, *, now: datetime | None = None) -> Decision:
        """Point ``route``: whether a ``routes:`` entry opens ``request.method`` on ``request.path``.

        Asked only for paths celgate does not govern (``route_table.Kind.NOT_GOVERNED``),
        with the canonical path. ``rule`` names the entry that opened it; a
        deny (``rule`` None) means the proxy refuses the request.
        """
        return open_route(self, principal, request, now=now)

    def explain_route(self, principal: Principal, request: RequestInfo, *, now: datetime | None = None) -> Explanation:
        return explain_route(self, principal, request, now=now)

    def summary(self) -> dict[str, Any]:
        """The active set as ``GET /admin/policies`` shows it (JSON-ready)."""
        return {
            "version": self.version,
            "files": list(self.files),
            "rule_count": self.rule_count,
            "loaded_at": iso_seconds(self.loaded_at),
            "backend": self.backend,
            "routes": [
                {
                    "id": route.id,
                    "paths": list(route.paths.patterns),
                    "methods": list(route.methods) if route.methods is not None else None,
                    "principals": list(route.principals.patterns) if route.principals is not None else None,
                    "when": route.when,
                    "description": route.description,
                    "file": route.file,
                    "line": route.line,
                }
                for route in self.routes
            ],
        }

    def reads_arguments(self, principal: Principal, request: RequestInfo, tool_name: str) -> bool:
        """Whether a candidate tool_call rule reads the arguments (a stream must hold the call until complete)."""
        plan = self.index.lookup(Point.TOOL_CALL, principal.id, request.model, request.agent or "", tool_name)
        return plan.reads_arguments

    def reads_headers(self, principal: Principal, model: str, agent: str | None) -> bool:
        """Whether a rule that may decide this request or one of its tool calls reads ``request.headers``.

        When none does, the proxy leaves ``request.headers`` empty: it skips building the map and the checks
        on it (a header sent twice with two values, text CEL cannot hold). Tool lists are not looked at, since
        the calls are not known yet. Remembered per (principal, model, agent), up to ``_MAX_HEADER_ANSWERS``.
        """
        key = (principal.id, model, agent or "")
        known = self._headers_read.get(key)
        if known is None:
            known = any(
                not {"principals", "models", "agents"}.intersection(mismatched_lists(rule, *key, ""))
                for rule in self._header_rules
            )
            if len(self._headers_read) < _MAX_HEADER_ANSWERS:
                self._headers_read[key] = known
        return known

    def usable_tools(self, principal: Principal, request: RequestInfo, tool_names: Iterable[str]) -> frozenset[str]:
        """The offered tools some call could be allowed for; the proxy strips the others.

        A tool is usable when an allow rule's globs match it (its ``when`` is
        ignored), or when the default would not block it (``defaults.decision:
        allow`` or ``defaults.mode: dry-run``) — unless an enforcing deny rule
        without ``when`` matches it, or its name is not plausible (``names``).
        A tool under a dry-run deny stays.
        """
        lookup = self.index.lookup
        agent = request.agent or ""
        return frozenset(
            name
            for name in tool_names
            if name_problem(name) is None and lookup(Point.TOOL_CALL, principal.id, request.model, agent, name).usable
        )

    def __repr__(self) -> str:
        routes = f" {len(self.routes)} routes," if self.routes else ""
        return f"<PolicySet {self.version} {self.rule_count} rules,{routes} {len(self.files)} files, {self.backend}>"
