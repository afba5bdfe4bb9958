"""Decisions, explanations, and the audit record built from a decision."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from .schema import Action, Effect, Mode, Point, Principal, ToolCall

__all__ = ["Decision", "Explanation", "RuleTrace", "audit_record"]


class Decision(NamedTuple):
    """The outcome at one decision point. The caller logs, audits and counts it.

    ``effect=DENY, mode=DRY_RUN`` is a "would deny": traffic passes, the deny is recorded.
    ``errors`` lists ``(rule, message)`` for every rule whose ``when`` failed to evaluate.
    """

    point: Point
    effect: Effect
    mode: Mode
    rule: str | None
    reason: str
    action: Action
    matched: tuple[str, ...]
    errors: tuple[tuple[str, str], ...]
    eval_seconds: float
    subject: str
    message: str
    policy_version: str = ""

    @property
    def blocked(self) -> bool:
        return self.effect is Effect.DENY and self.mode is Mode.ENFORCE

    @property
    def would_deny(self) -> bool:
        return self.effect is Effect.DENY and self.mode is Mode.DRY_RUN


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """How one rule of the decision point fared, for ``explain``.

    ``mismatched`` names the glob lists that did not match (empty: the rule was a
    candidate); ``outcome`` is ``"true"``, ``"false"``, ``"error"``, ``"no when"``
    for candidates and ``"-"`` otherwise.
    """

    rule: str
    effect: Effect
    mode: Mode
    file: str
    line: int | None
    mismatched: tuple[str, ...]
    when: str | None
    outcome: str
    error: str | None = None

    @property
    def candidate(self) -> bool:
        return not self.mismatched


@dataclass(frozen=True, slots=True)
class Explanation:
    """Every rule of a decision point with its glob and ``when`` results, and the final decision."""

    decision: Decision
    rules: tuple[RuleTrace, ...]


def _iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def audit_record(
    decision: Decision,
    *,
    request_id: str,
    principal: Principal,
    tool: ToolCall | None,
    include_arguments: bool,
) -> dict[str, Any]:
    """One audit log line (as a dict). Never contains a key; tool arguments only when asked."""
    record: dict[str, Any] = {
        "time": _iso_utc(datetime.now(UTC)),
        "request_id": request_id,
        "principal": principal.id,
        "point": decision.point.value,
        "subject": decision.subject,
        "effect": decision.effect.value,
        "would_deny": decision.would_deny,
        "rule": decision.rule,
        "reason": decision.reason,
        "mode": decision.mode.value,
        "matched": list(decision.matched),
        "errors": [{"rule": rule, "error": message} for rule, message in decision.errors],
        "eval_us": round(decision.eval_seconds * 1e6, 1),
        "policy_version": decision.policy_version,
    }
    if tool is not None:
        record["tool_call_id"] = tool.id
        record["source"] = tool.source
        if tool.server:
            record["server"] = tool.server
        if tool.type != "function":
            record["tool_type"] = tool.type
        if decision.blocked:
            record["action"] = decision.action.value
        if include_arguments:
            record["arguments"] = tool.raw_arguments
    return record
