"""OpenAI Agents SDK drop-ins, served as models by celgate (see docs/agents.md).

Importing this package does not import the SDK (``import agents`` costs ~1 s
and ~90 MiB): the registry imports it when the first drop-in folder exists,
and the run entry points below import the runner lazily, since a
``LoadedAgent`` only exists once the SDK is loaded.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from .dropin import LoadedAgent
from .errors import AgentLoadFailure, AgentRunError, ToolLoadFailure
from .host import AgentSettings, CallerContext, GatewayHooks, ToolExecution
from .registry import AgentRegistry

__all__ = [
    "AgentLoadFailure",
    "AgentRegistry",
    "AgentRunError",
    "AgentSettings",
    "CallerContext",
    "GatewayHooks",
    "LoadedAgent",
    "ToolExecution",
    "ToolLoadFailure",
    "gateway_tool",
    "run_completion",
    "run_response",
    "stream_completion",
    "stream_response",
]


def gateway_tool(name: str) -> Any:
    """The gateway tool ``name`` (from ``--tools``), for a Python drop-in's ``Agent(tools=[...])``.

    Call it at import time in ``agent.py``. The agent gets the catalogue's
    implementation, governance (``tool.source`` ``gateway`` or ``mcp``) and
    metrics; a reloaded tool's new code applies on the next call. Raises
    ``LookupError`` (a load failure of the drop-in) when no such tool is loaded.
    """
    from .catalogue import gateway_tool_handle

    return gateway_tool_handle(name)


async def run_completion(agent: LoadedAgent, body: dict[str, Any], caller: CallerContext) -> dict[str, Any]:
    """Run the drop-in for one non-streamed request; returns a ``chat.completion`` dict."""
    from .runner import run_completion as run

    return await run(agent, body, caller)


def stream_completion(
    agent: LoadedAgent, body: dict[str, Any], caller: CallerContext
) -> AsyncGenerator[dict[str, Any], None]:
    """Run the drop-in for one streamed request; yields ``chat.completion.chunk`` dicts.

    Closing the iterator (or cancelling the task iterating it) cancels the run.
    """
    from .runner import stream_completion as stream

    return stream(agent, body, caller)


async def run_response(agent: LoadedAgent, body: dict[str, Any], caller: CallerContext) -> dict[str, Any]:
    """Run the drop-in for one non-streamed ``POST /v1/responses``; returns a ``response`` dict."""
    from .runner import run_response as run

    return await run(agent, body, caller)


def stream_response(
    agent: LoadedAgent, body: dict[str, Any], caller: CallerContext
) -> AsyncGenerator[dict[str, Any], None]:
    """Run the drop-in for one streamed ``POST /v1/responses``; yields Responses stream event dicts.

    Each event's ``type`` is its SSE event name. Closing the iterator (or
    cancelling the task iterating it) cancels the run.
    """
    from .runner import stream_response as stream

    return stream(agent, body, caller)
