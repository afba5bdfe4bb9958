"""``PolicySet``: one compiled, immutable policy snapshot, safe to share between requests."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from datetime import datetime

from .backends import Backend
from .decision import Decision, Explanation
from .errors import Problem
from .evaluate import Plan, ResultCache, decide, explain
from .globs import CandidateIndex
from .model import ANONYMOUS, Defaults, Effect, Point, Principal, RequestInfo, Rule, ToolCall

__all__ = ["PolicySet"]


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
    ) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.principals = principals  # id -> principal, every declared one
        self._keys = keys  # sha256 hex of a key -> principal
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

    @classmethod
    def allow_all(cls) -> PolicySet:
        """For ``--no-policy``: no rules, no principals, every decision allows (rule None)."""
        defaults = Defaults(decision=Effect.ALLOW)
        return cls(rules=(), principals={}, keys={}, defaults=defaults, engine=None, version="allow-all", files=())

    def resolve_principal(self, api_key: str | None) -> Principal:
        """The principal whose key hashes to sha256(api_key); ANONYMOUS for none or an unknown key."""
        if not api_key:
            return ANONYMOUS
        return self._keys.get(hashlib.sha256(api_key.encode()).hexdigest(), ANONYMOUS)

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

    def reads_arguments(self, principal: Principal, request: RequestInfo, tool_name: str) -> bool:
        """Whether a candidate tool_call rule reads the arguments (a stream must hold the call until complete)."""
        plan = self.index.lookup(Point.TOOL_CALL, principal.id, request.model, request.agent or "", tool_name)
        return plan.reads_arguments

    def usable_tools(self, principal: Principal, request: RequestInfo, tool_names: Iterable[str]) -> frozenset[str]:
        """The offered tools some call could be allowed for; the proxy strips the others.

        A tool is usable when an allow rule's globs match it (its ``when`` is
        ignored), or when the default would not block it (``defaults.decision:
        allow`` or ``defaults.mode: dry-run``) — unless an enforcing deny rule
        without ``when`` matches it. A tool under a dry-run deny stays.
        """
        lookup = self.index.lookup
        agent = request.agent or ""
        return frozenset(
            name for name in tool_names if lookup(Point.TOOL_CALL, principal.id, request.model, agent, name).usable
        )

    def __repr__(self) -> str:
        return f"<PolicySet {self.version} {self.rule_count} rules, {len(self.files)} files, {self.backend}>"
