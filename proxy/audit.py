"""The policy audit log: one JSON line per denying, would-deny or erroring decision, and per gateway tool run.

Decision records are built by ``policy.audit_record`` (which never includes
a key, and includes tool arguments only when asked); this module decides
which decisions are written and where. Every execution of a gateway tool is
written too (``point: "tool_execution"``): its provenance, duration,
outcome and result size, after the ``tool_call`` decision that allowed it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from celgate.adapters import ToolExecution
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

    def execution(self, execution: ToolExecution, request_id: str, principal: Principal) -> None:
        """One gateway tool execution, always written (it is provenance, not a decision)."""
        self._writer.write(
            {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "request_id": request_id,
                "principal": principal.id,
                "point": "tool_execution",
                "agent": execution.agent,
                "tool": execution.tool,
                "tool_call_id": execution.call_id,
                "source": execution.source,
                "origin": execution.origin,
                "server": execution.server or None,
                "duration_ms": round(execution.seconds * 1000, 3),
                "outcome": execution.outcome,
                "result_bytes": execution.result_bytes,
            }
        )
