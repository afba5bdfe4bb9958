"""The drop-in run in progress, visible to every adapter module the run reaches.

For the duration of an agent run, ``CURRENT_RUN`` holds a ``RunScope``;
contextvars propagate into the SDK's own tasks (streamed runs, tool calls,
agent-as-tool runs), so the gateway client's header hook, the tool guardrail
and the runner override all see the request that started the run, even when
runs of many requests share the same Agent objects.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.models.interface import ModelProvider

    from agents import Usage

    from .dropin import LoadedAgent
    from .host import CallerContext

__all__ = ["CURRENT_RUN", "RunScope"]


@dataclass(frozen=True, slots=True)
class RunScope:
    """One drop-in run of one request.

    ``sink`` is set for streaming requests: top-level SDK runs put their text
    deltas (``str``) and tool events (``dict``) into it; ``None`` ends the run.
    ``nested`` marks the scope inside a top-level SDK run, so runs started
    there (agents-as-tools) are neither reconfigured nor forwarded.
    ``usage`` accumulates every top-level run of the request.
    """

    caller: CallerContext
    agent: LoadedAgent
    provider: ModelProvider
    usage: Usage
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
