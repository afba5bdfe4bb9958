"""The gateway side of drop-in agents: their tool calls meet policy, metrics and audit.

``adapters`` never imports ``proxy``; it calls these hooks, which the proxy
hands to the agent registry at startup.
"""

from __future__ import annotations

import logging

from celgate.adapters import CallerContext
from celgate.policy import Decision, ToolCall

from .enforcement import Enforcer
from .metrics import Metrics

__all__ = ["GatewayHooksImpl"]

log = logging.getLogger("celgate.agents")


class GatewayHooksImpl:
    """``adapters.GatewayHooks`` over the app's enforcer and metrics."""

    def __init__(self, enforcer: Enforcer, metrics: Metrics) -> None:
        self._enforcer = enforcer
        self._metrics = metrics

    def check_tool(self, caller: CallerContext, tool: ToolCall) -> Decision:
        policy = self._enforcer.policy()
        return self._enforcer.check_tool(policy, caller.principal, caller.request, tool, caller.request_id)

    def tool_finished(self, tool_name: str, seconds: float, failed: bool) -> None:
        self._metrics.tool_duration.labels(tool_name).observe(seconds)
        if failed:
            self._metrics.tool_failures.labels(tool_name).inc()

    def load_failed(self, agent: str, kind: str) -> None:
        self._metrics.agent_load_failures.labels(agent, kind).inc()
