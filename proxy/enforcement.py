"""The proxy's side of policy: admission, tool-call verdicts, and their records.

``policy`` decides (pure, no I/O); this module turns decisions into
behaviour (403, stripped tools, held or dropped tool calls) and records each
one in metrics, the audit log and the diagnostic log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celgate.policy import Action, Decision, PolicySet, PolicyStore, Principal, RequestInfo, ToolCall

from .audit import AuditLog
from .errors import PolicyDenied
from .interceptor import ALLOWED, ToolVerdict, Verdict
from .metrics import Metrics

__all__ = ["Enforcer", "PolicyToolHook"]

log = logging.getLogger("celgate.policy")


class Enforcer:
    """Applies the active policy set; ``store`` is None under ``--no-policy``."""

    def __init__(self, store: PolicyStore | None, metrics: Metrics, audit: AuditLog | None) -> None:
        self._store = store
        self._allow_all = PolicySet.allow_all() if store is None else None
        self._metrics = metrics
        self._audit = audit

    @property
    def store(self) -> PolicyStore | None:
        return self._store

    def policy(self) -> PolicySet:
        """The set a request uses from start to end (reloads swap, never mutate)."""
        return self._store.current if self._store is not None else self._allow_all  # type: ignore[return-value]

    def admit(self, policy: PolicySet, principal: Principal, request: RequestInfo, request_id: str) -> None:
        """Raise ``PolicyDenied`` (403) unless the request may go on; ``--no-policy`` decides nothing."""
        if self._store is None:
            return
        decision = policy.check_request(principal, request)
        self.record(decision, request_id, principal)
        if decision.blocked:
            raise PolicyDenied(decision.message)

    def usable_tools(
        self, policy: PolicySet, principal: Principal, request: RequestInfo, names: Iterable[str]
    ) -> frozenset[str]:
        if self._store is None:
            return frozenset(names)
        return policy.usable_tools(principal, request, names)

    def tool_hook(
        self, policy: PolicySet, principal: Principal, request: RequestInfo, request_id: str, source: str
    ) -> PolicyToolHook:
        return PolicyToolHook(self, policy, principal, request, request_id, source)

    def check_tool(
        self, policy: PolicySet, principal: Principal, request: RequestInfo, tool: ToolCall, request_id: str
    ) -> Decision:
        decision = policy.check_tool_call(principal, request, tool)
        self.record(decision, request_id, principal, tool)
        self._metrics.tool_calls.labels(tool.name, _label(decision), tool.source).inc()
        return decision

    def record(self, decision: Decision, request_id: str, principal: Principal, tool: ToolCall | None = None) -> None:
        metrics = self._metrics
        metrics.policy_decisions.labels(decision.point.value, _label(decision), decision.rule or "default").inc()
        metrics.policy_eval.observe(decision.eval_seconds)
        for rule, message in decision.errors:
            metrics.policy_eval_errors.labels(rule).inc()
            log.warning("rule %s failed to evaluate (counted as no match / deny): %s", rule, message,
                        extra={"fields": {"request_id": request_id, "rule": rule}})
        if decision.would_deny:
            log.info("dry-run: would deny %s (%s)", decision.subject, decision.rule,
                     extra={"fields": {"request_id": request_id, "rule": decision.rule}})
        if self._audit is not None:
            self._audit.record(decision, request_id, principal, tool)


def _label(decision: Decision) -> str:
    return "would_deny" if decision.would_deny else decision.effect.value


class PolicyToolHook:
    """``interceptor.ToolCallHook`` over one request's policy set and principal."""

    __slots__ = ("_enforcer", "_policy", "_principal", "_request", "_request_id", "_source")

    def __init__(
        self,
        enforcer: Enforcer,
        policy: PolicySet,
        principal: Principal,
        request: RequestInfo,
        request_id: str,
        source: str,
    ) -> None:
        self._enforcer = enforcer
        self._policy = policy
        self._principal = principal
        self._request = request
        self._request_id = request_id
        self._source = source

    def needs_arguments(self, name: str) -> bool:
        return self._policy.reads_arguments(self._principal, self._request, name)

    def decide(self, name: str, raw_arguments: str, call_id: str) -> ToolVerdict:
        tool = ToolCall(name=name, raw_arguments=raw_arguments, id=call_id, source=self._source)
        decision = self._enforcer.check_tool(self._policy, self._principal, self._request, tool, self._request_id)
        if not decision.blocked:
            return ALLOWED
        verdict = Verdict.REJECT if decision.action is Action.ERROR else Verdict.STRIP
        return ToolVerdict(verdict, decision.message)


