"""What the host (the proxy) hands to adapters, and what it implements for them.

The proxy configures a registry with ``AgentSettings``, builds one
``CallerContext`` per client request that runs a drop-in, and implements
``GatewayHooks`` so agents' tool calls meet its policy, audit and metrics.
A leaf: it imports neither the SDK nor (at runtime) ``policy``, so the proxy
can import ``adapters`` cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from celgate import policy

__all__ = ["AgentSettings", "CallerContext", "GatewayHooks", "ToolExecution"]


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Registry configuration; ``gateway_url`` (celgate's own ``/v1`` URL) is optional.

    When known at start-up, ``gateway_url`` becomes ``OPENAI_BASE_URL`` for
    clients that drop-in modules build themselves; runs always use the
    per-request ``CallerContext.gateway_url``. ``api`` is the API of the
    agents' own model calls to celgate: ``"chat"`` (Chat Completions) or
    ``"responses"``; celgate governs tool calls on both. ``tools`` is the
    gateway tool catalogue's directory (``--tools``); ``None``: no gateway tools.
    """

    directory: Path
    default_model: str | None
    max_turns: int = 10
    watch: bool = True
    gateway_url: str | None = None
    api: str = "chat"
    tools: Path | None = None


@dataclass(frozen=True, slots=True)
class CallerContext:
    """One client request that runs a drop-in; its identity travels with every model call."""

    principal: policy.Principal
    request: policy.RequestInfo
    request_id: str
    authorization: str | None
    gateway_url: str
    internal_token: str


@dataclass(frozen=True, slots=True)
class ToolExecution:
    """The provenance of one gateway tool execution, for the audit log and metrics.

    ``source`` is ``gateway`` or ``mcp``; ``origin`` is where the code ran
    (a module path, an HTTP URL, an MCP server); ``outcome`` is ``ok`` or
    ``error`` (the model was told of the error); ``result_bytes`` is the
    size of what the model got back.
    """

    agent: str
    tool: str
    call_id: str
    source: str
    origin: str
    server: str
    seconds: float
    outcome: str
    result_bytes: int


class GatewayHooks(Protocol):
    """Implemented by the proxy: policy, audit and metrics for what agents do."""

    def check_tool(self, caller: CallerContext, tool: policy.ToolCall) -> policy.Decision:
        """Decide one tool call an agent is about to execute (``tool.source``: ``agent``, ``gateway``, ``mcp``)."""

    def tool_finished(self, tool_name: str, seconds: float, failed: bool) -> None:
        """Record the duration of one executed tool, and whether it raised."""

    def tool_executed(self, caller: CallerContext, execution: ToolExecution) -> None:
        """Record one executed gateway tool (its decision was recorded by ``check_tool``)."""

    def load_failed(self, agent: str, kind: str) -> None:
        """Count one new load failure of a drop-in."""

    def tool_load_failed(self, tool: str, kind: str) -> None:
        """Count one new load failure of a gateway tool file."""
