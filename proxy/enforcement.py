"""The proxy's side of policy: the active policy source, and the record of every decision.

``celgate.policy`` decides (pure, no I/O); this module keeps the policy
source (a hot-reloading ``PolicyStore``, or ``NoPolicy`` under
``--no-policy``) and records each decision in metrics, the audit log and the
diagnostic log. What a decision does to a request is the ``Caller``'s job.
"""

from __future__ import annotations

import logging
from typing import Any

from celgate.adapters import ToolExecution
from celgate.policy import Decision, Effect, Mode, Point, PolicySet, PolicyStore, Principal, ReloadResult, ToolCall

from .audit import AuditLog
from .metrics import Metrics

__all__ = ["Enforcer", "NoPolicy"]

log = logging.getLogger("celgate.policy")
_MAX_COUNTED = 4096  # (point, effect, mode, rule) keys remembered; rule names come from policy, not clients


class NoPolicy:
    """``--no-policy``: the null policy source. Its set allows everything and nothing is ever decided.

    The ``Enforcer`` reports ``enforcing = False`` for it, and callers then
    skip every decision point: no admission check, no tool-call
    interception, no decision metrics or audit records.
    """

    def __init__(self) -> None:
        self.current = PolicySet.allow_all()

    def status(self) -> dict[str, Any]:
        return {"active": None, "mode": "disabled (--no-policy)", "last_error": None}

    async def watch(self) -> None:
        """Nothing to watch."""

    def reload(self) -> ReloadResult:
        """Nothing to reload: the set stays allow-all."""
        return ReloadResult(True, self.current, None)


class Enforcer:
    """The active policy source and the one place decisions are recorded."""

    def __init__(
        self, source: PolicyStore | NoPolicy, metrics: Metrics, audit: AuditLog | None, max_held_call_bytes: int
    ) -> None:
        self.source = source
        self.max_held_call_bytes = max_held_call_bytes
        self.enforcing = not isinstance(source, NoPolicy)
        self._metrics = metrics
        self._audit = audit
        self._counted: dict[tuple[Point, Effect, Mode, str | None], tuple[Any, str]] = {}

    def policy(self) -> PolicySet:
        """The set a request uses from start to end (reloads swap, never mutate)."""
        return self.source.current

    def readiness(self) -> dict[str, Any]:
        """The policy part of ``/readyz``."""
        if not self.enforcing:
            return {"mode": "disabled (--no-policy: everything allowed)"}
        return {"mode": "enforcing", "version": self.source.current.version}

    def record(self, decision: Decision, request_id: str, principal: Principal, tool: ToolCall | None = None) -> None:
        metrics = self._metrics
        counted = self._counted.get((decision.point, decision.effect, decision.mode, decision.rule))
        if counted is None:
            counted = self._count_of(decision)
        counted[0].inc()
        metrics.policy_eval.observe(decision.eval_seconds)
        if tool is not None:
            metrics.tool_calls.labels(tool.name, counted[1], tool.source).inc()
        for rule, message in decision.errors:
            metrics.policy_eval_errors.labels(rule).inc()
            log.warning(
                "rule %s failed to evaluate (counted as no match / deny): %s",
                rule,
                message,
                extra={"fields": {"request_id": request_id, "rule": rule}},
            )
        if decision.would_deny:
            log.info(
                "dry-run: would deny %s (%s)",
                decision.subject,
                decision.rule,
                extra={"fields": {"request_id": request_id, "rule": decision.rule}},
            )
        if self._audit is not None:
            self._audit.record(decision, request_id, principal, tool)

    def executed(self, execution: ToolExecution, request_id: str, principal: Principal) -> None:
        """Record one gateway tool execution: duration and failures in metrics, provenance in the audit log."""
        metrics = self._metrics
        metrics.tool_duration.labels(execution.tool).observe(execution.seconds)
        if execution.outcome != "ok":
            metrics.tool_failures.labels(execution.tool).inc()
        if self._audit is not None:
            self._audit.execution(execution, request_id, principal)

    def _count_of(self, decision: Decision) -> tuple[Any, str]:
        """The decision counter's child and the effect label, per (point, effect, mode, rule): rules are few."""
        label = "would_deny" if decision.would_deny else decision.effect.value
        child = self._metrics.policy_decisions.labels(decision.point.value, label, decision.rule or "default")
        if len(self._counted) < _MAX_COUNTED:
            self._counted[(decision.point, decision.effect, decision.mode, decision.rule)] = (child, label)
        return child, label
