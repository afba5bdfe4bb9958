"""The policy audit log: one JSON line per denying, would-deny or erroring decision.

Records are built by ``policy.audit_record`` (which never includes a key, and
includes tool arguments only when asked); this module decides which
decisions are written and where.
"""

from __future__ import annotations

from celgate.policy import Decision, Principal, ToolCall, audit_record

from .accesslog import JsonLineWriter

__all__ = ["AuditLog"]


class AuditLog:
    def __init__(self, writer: JsonLineWriter, *, include_allows: bool, include_arguments: bool) -> None:
        self._writer = writer
        self._include_allows = include_allows
        self._include_arguments = include_arguments

    def record(self, decision: Decision, request_id: str, principal: Principal, tool: ToolCall | None = None) -> None:
        if decision.effect == "allow" and not decision.errors and not self._include_allows:
            return
        self._writer.write(
            audit_record(
                decision,
                request_id=request_id,
                principal=principal,
                tool=tool,
                include_arguments=self._include_arguments,
            )
        )
