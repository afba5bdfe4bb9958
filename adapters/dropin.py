"""A loaded drop-in: its validated config, its entry point, and what it shares with the others.

Plain data: nothing here imports the SDK or ``openai`` at runtime (the
annotations name them), so the proxy can hold a ``LoadedAgent`` type cheaply.
"""

from __future__ import annotations

import time
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .host import AgentSettings, GatewayHooks

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from agents import Agent

__all__ = ["ClientPool", "DropinConfig", "LoadedAgent", "Runtime"]


class ClientPool(Protocol):
    """Gateway clients by URL (``gateway.GatewayClients``); a protocol, so this module needs no transport."""

    def get(self, base_url: str) -> AsyncOpenAI:
        """The shared client for one gateway URL."""

    async def aclose(self) -> None:
        """Close every client's connection pool."""


@dataclass(frozen=True, slots=True)
class Runtime:
    """What every loaded agent of one registry shares: settings, hooks, gateway clients."""

    settings: AgentSettings
    hooks: GatewayHooks
    clients: ClientPool


@dataclass(frozen=True, slots=True)
class DropinConfig:
    """The validated module-level ``__celgate__`` dict (every key optional)."""

    model: str | None = None
    upstream: str | None = None
    description: str | None = None
    max_turns: int | None = None


@dataclass(frozen=True, slots=True, eq=False)
class LoadedAgent:
    """One successfully loaded version of a drop-in; runs keep the version they started on.

    ``kind`` is the export used: ``agent`` (module attribute ``agent``),
    ``run_workflow`` (Agent Builder export), ``single_agent`` (the one
    module-level Agent) or ``declarative`` (an ``agent.yaml``, which has no
    ``module``). Exactly one of ``entry`` / ``workflow`` is set.
    """

    name: str
    source: Path
    kind: str
    entry: Agent[Any] | None
    workflow: Callable[[Any], Awaitable[Any]] | None
    workflow_input: type | None
    config: DropinConfig
    tools: tuple[str, ...]
    runtime: Runtime
    module: types.ModuleType | None
    loaded_at: float = field(default_factory=time.time)

    @property
    def max_turns(self) -> int:
        return self.config.max_turns or self.runtime.settings.max_turns

    @property
    def model(self) -> str | None:
        """The model the entry agent's calls ask celgate for.

        ``None`` for a workflow (each of its agents decides) and when no model
        is set anywhere; a custom ``Model`` object shows as its class name.
        """
        if self.config.model is not None:
            return self.config.model
        if self.entry is None:
            return None
        own = self.entry.model
        if own is None:
            return self.runtime.settings.default_model
        return own if isinstance(own, str) else type(own).__name__

    def describe(self) -> dict[str, Any]:
        """This version as listed by ``GET /admin/agents``."""
        return {
            "name": self.name,
            "source": str(self.source),
            "kind": self.kind,
            "model": self.model,
            "tools": list(self.tools),
            "loaded_at": datetime.fromtimestamp(self.loaded_at, UTC).isoformat(timespec="seconds"),
            "description": self.config.description,
            "max_turns": self.max_turns,
            "upstream": self.config.upstream,
        }
