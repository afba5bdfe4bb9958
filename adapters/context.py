"""What the proxy hands to adapters, and the per-run scope every adapter module reads.

The proxy builds one ``CallerContext`` per client request. For the duration of
an agent run, ``CURRENT_RUN`` holds a ``RunScope``; contextvars propagate into
the SDK's own tasks (streamed runs, tool calls, agent-as-tool runs), so the
gateway client's header hook, the tool guardrail and the runner override all
see the request that started the run, even when runs of many requests share
the same Agent objects. This module imports neither the SDK nor ``policy`` at
runtime, so the proxy can import ``adapters`` cheaply.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from celgate import policy

    from .discovery import LoadedAgent

__all__ = [
    "CURRENT_RUN",
    "AgentSettings",
    "CallerContext",
    "GatewayHooks",
    "RunScope",
    "Runtime",
]


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Registry configuration; ``gateway_url`` (celgate's own ``/v1`` URL) is optional.

    When known at start-up, ``gateway_url`` becomes ``OPENAI_BASE_URL`` for
    clients that drop-in modules build themselves; runs always use the
    per-request ``CallerContext.gateway_url``.
    """

    directory: Path
    default_model: str | None
    max_turns: int = 10
    watch: bool = True
    gateway_url: str | None = None


@dataclass(frozen=True, slots=True)
class CallerContext:
    """One client request that runs a drop-in; its identity travels with every model call."""

    principal: policy.Principal
    request: policy.RequestInfo
    request_id: str
    authorization: str | None
    gateway_url: str
    internal_token: str


class GatewayHooks(Protocol):
    """Implemented by the proxy: policy, audit and metrics for what agents do."""

    def check_tool(self, caller: CallerContext, tool: policy.ToolCall) -> policy.Decision:
        """Decide one agent tool call (``tool.source == "agent"``); audit and count it."""

    def tool_finished(self, tool_name: str, seconds: float, failed: bool) -> None:
        """Record the duration of one executed tool, and whether it raised."""

    def load_failed(self, agent: str, kind: str) -> None:
        """Count one new load failure of a drop-in."""


@dataclass(frozen=True, slots=True)
class Runtime:
    """What every loaded agent of one registry shares: settings, hooks, gateway clients."""

    settings: AgentSettings
    hooks: GatewayHooks
    clients: Any  # gateway.GatewayClients; typed loosely so this module never imports openai


@dataclass(frozen=True, slots=True)
class RunScope:
    """One drop-in run of one request.

    ``sink`` is set for streaming requests: top-level SDK runs put their text
    deltas (``str``) and tool events (``dict``) into it; ``None`` ends the run.
    ``nested`` marks the scope inside a top-level SDK run, so runs started
    there (agents-as-tools) are neither reconfigured nor forwarded.
    ``usage`` (an ``agents.Usage``) accumulates every top-level run of the request.
    """

    caller: CallerContext
    agent: LoadedAgent
    provider: Any  # gateway.GatewayProvider
    usage: Any  # agents.Usage
    sink: asyncio.Queue[str | dict[str, Any] | None] | None = None
    nested: bool = False

    def headers(self) -> dict[str, str]:
        """Headers for the agent's model calls to celgate (see docs/agents.md)."""
        headers = {
            "x-celgate-agent": self.agent.name,
            "x-request-id": self.caller.request_id,
            "x-celgate-internal": self.caller.internal_token,
        }
        if self.caller.authorization is not None:
            headers["authorization"] = self.caller.authorization
        if self.agent.config.upstream is not None:
            headers["x-celgate-upstream"] = self.agent.config.upstream
        return headers


CURRENT_RUN: ContextVar[RunScope | None] = ContextVar("celgate_current_run", default=None)
