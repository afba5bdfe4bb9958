"""Model name -> the loaded version of each drop-in, kept current from the filesystem.

``start`` loads every drop-in; ``watch`` reloads only the drop-ins whose
folder changed (any file: ``agent.py``, helpers, ``requirements.txt``, data),
loads new folders and forgets deleted ones. A failed (re)load is recorded,
logged once per distinct failure and counted via ``GatewayHooks.load_failed``;
the previous working version, if any, keeps serving. Runs hold their own
``LoadedAgent``, so a reload never disturbs a run in flight.

The SDK is imported (and configured, see ``sdkenv``) only when the first
drop-in folder is found.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from watchfiles import awatch

from .discovery import ENTRY_FILE, find_agents, forget, load_agent
from .dropin import LoadedAgent, Runtime
from .errors import AgentLoadFailure, LoadError
from .host import AgentSettings, GatewayHooks
from .sdkenv import PLACEHOLDER_API_KEY, prepare_sdk

__all__ = ["AgentRegistry"]

logger = logging.getLogger("celgate.agents")


class AgentRegistry:
    """The drop-in agents of one directory; all methods run on the event loop."""

    def __init__(self, settings: AgentSettings, hooks: GatewayHooks) -> None:
        self._settings = settings
        self._hooks = hooks
        self._directory = settings.directory.resolve()
        self._folders: dict[str, Path] = {}
        self._agents: dict[str, LoadedAgent] = {}
        self._failures: dict[str, AgentLoadFailure] = {}
        self._runtime: Runtime | None = None

    async def start(self) -> None:
        """Discover and load every drop-in."""
        self._sync(changed=None)

    async def watch(self) -> None:
        """Reload on filesystem changes until cancelled (returns at once if watching is off)."""
        if not self._settings.watch:
            return
        if not self._directory.is_dir():
            logger.warning("agents directory %s does not exist; not watching it", self._directory)
            return
        async for changes in awatch(self._directory):
            self._sync({Path(path) for _, path in changes})

    async def close(self) -> None:
        """Close the gateway clients (their connection pools)."""
        if self._runtime is not None:
            await self._runtime.clients.aclose()

    def get(self, name: str) -> LoadedAgent | None:
        return self._agents.get(name)

    def failure(self, name: str) -> AgentLoadFailure | None:
        """Why ``name`` is not (or no longer freshly) loaded, if it failed."""
        return self._failures.get(name)

    def names(self) -> list[str]:
        return sorted(self._agents)

    def agents(self) -> list[dict[str, Any]]:
        """Loaded versions; ``stale`` marks one whose newer version failed to load."""
        return [{**self._agents[name].describe(), "stale": name in self._failures} for name in sorted(self._agents)]

    def failures(self) -> list[AgentLoadFailure]:
        """Every current failure, by agent name (``as_json()`` each for ``/admin/agents/errors``)."""
        return [self._failures[name] for name in sorted(self._failures)]

    def _sync(self, changed: set[Path] | None) -> None:
        """Load new folders, reload changed ones (``None``: all), drop deleted ones."""
        found = find_agents(self._directory)
        for name in self._folders.keys() - found.keys():
            self._drop(name)
        for name, folder in found.items():
            if changed is None or name not in self._folders or _touches(changed, folder):
                self._load(name, folder)
        self._folders = found

    def _load(self, name: str, folder: Path) -> None:
        try:
            loaded = load_agent(name, folder, self._ensure_runtime())
        except LoadError as exc:
            self._record(AgentLoadFailure(name, exc.kind, exc.message, exc.file or folder / ENTRY_FILE))
            return
        verb = "reloaded" if name in self._agents else "loaded"
        self._agents[name] = loaded
        self._failures.pop(name, None)
        logger.info(
            "agent %s %s from %s (%s; tools: %s)",
            name,
            verb,
            loaded.source,
            loaded.kind,
            ", ".join(loaded.tools) or "none",
        )

    def _drop(self, name: str) -> None:
        self._agents.pop(name, None)
        self._failures.pop(name, None)
        forget(name)
        logger.info("agent %s removed (its folder or agent.py is gone)", name)

    def _record(self, failure: AgentLoadFailure) -> None:
        """Keep the failure; log and count it only if it differs from the one already known."""
        previous = self._failures.get(failure.agent)
        if previous is not None and (previous.kind, previous.message) == (failure.kind, failure.message):
            return
        self._failures[failure.agent] = failure
        serving = "; the previous version keeps serving" if failure.agent in self._agents else ""
        logger.error("agent %s failed to load (%s)%s: %s", failure.agent, failure.kind, serving, failure.message)
        self._hooks.load_failed(failure.agent, failure.kind)

    def _ensure_runtime(self) -> Runtime:
        if self._runtime is None:
            prepare_sdk(self._settings.gateway_url, self._settings.api)
            from .gateway import GatewayClients  # imports openai; only once a drop-in exists

            self._runtime = Runtime(self._settings, self._hooks, GatewayClients(PLACEHOLDER_API_KEY))
        return self._runtime


def _touches(changed: set[Path], folder: Path) -> bool:
    return any(path.is_relative_to(folder) for path in changed)
