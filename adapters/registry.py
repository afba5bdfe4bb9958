"""Model name -> the loaded version of each drop-in, kept current from the filesystem.

``start`` loads every drop-in; ``watch`` reloads only the drop-ins whose
folder changed (any file: ``agent.py``, helpers, ``requirements.txt``, data),
loads new folders and forgets deleted ones. A failed (re)load is recorded,
logged once per distinct failure and counted via ``GatewayHooks.load_failed``;
the previous working version, if any, keeps serving. Runs hold their own
``LoadedAgent``, so a reload never disturbs a run in flight.

The registry also owns the gateway tool catalogue (``--tools``): it is
loaded first, so Python drop-ins can use its tools by name
(``celgate.adapters.gateway_tool``), and declarative agents
(``agent.yaml``) are compiled again whenever the catalogue or any agent
changes (``_relink``), so they always offer the current tools and hand off
to the current agents.

The SDK is imported (and configured, see ``sdkenv``) only when the first
drop-in folder or tool file is found.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watchfiles import awatch

from .discovery import ENTRY_FILE, YAML_FILE, find_agents, forget, load_agent
from .dropin import DropinConfig, LoadedAgent, Runtime
from .errors import AgentLoadFailure, LoadError, ToolLoadFailure
from .host import AgentSettings, GatewayHooks
from .sdkenv import PLACEHOLDER_API_KEY, prepare_sdk

if TYPE_CHECKING:
    from .catalogue import ToolCatalogue
    from .declarative import DeclarativeSpec

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
        self._specs: dict[str, DeclarativeSpec] = {}
        self._unlinked: set[str] = set()  # declarative agents whose last compile failed
        self._runtime: Runtime | None = None
        self._catalogue: ToolCatalogue | None = None

    async def start(self) -> None:
        """Load the tool catalogue, then discover and load every drop-in."""
        await self._load_catalogue()
        self._sync(changed=None)

    async def watch(self) -> None:
        """Reload on filesystem changes until cancelled (returns at once if watching is off)."""
        if not self._settings.watch:
            return
        watchers = [self._watch_agents()]
        if self._catalogue is not None:
            watchers.append(self._catalogue.watch(self._relink))
        await asyncio.gather(*watchers)

    async def _watch_agents(self) -> None:
        if not self._directory.is_dir():
            logger.warning("agents directory %s does not exist; not watching it", self._directory)
            return
        async for changes in awatch(self._directory):
            self._sync({Path(path) for _, path in changes})

    async def close(self) -> None:
        """Close the tool catalogue (MCP sessions, HTTP) and the gateway clients (their connection pools)."""
        if self._catalogue is not None:
            await self._catalogue.close()
        if self._runtime is not None:
            await self._runtime.clients.aclose()

    def tools(self) -> list[dict[str, Any]]:
        """The gateway tools, as ``GET /admin/tools`` lists them."""
        return self._catalogue.describe() if self._catalogue is not None else []

    def tool_failures(self) -> list[ToolLoadFailure]:
        return self._catalogue.failures() if self._catalogue is not None else []

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

    async def _load_catalogue(self) -> None:
        """(Re)load the gateway tools, if ``--tools`` names a directory and there are tools or agents to use them.

        An empty tools directory next to no agents does not import the SDK;
        one next to agents is watched, so tools added later are picked up.
        """
        directory = self._settings.tools
        if directory is None or not directory.is_dir():
            return
        if self._catalogue is None and not any(directory.iterdir()) and not find_agents(self._directory):
            return
        runtime = self._ensure_runtime()
        if self._catalogue is None:
            from .catalogue import ToolCatalogue  # imports the SDK: only once tools exist

            self._catalogue = ToolCatalogue(directory, runtime.hooks, watch=self._settings.watch)
        await self._catalogue.load()

    def _sync(self, changed: set[Path] | None) -> None:
        """Load new folders, reload changed ones (``None``: all), drop deleted ones; then relink."""
        found = find_agents(self._directory)
        for name in self._folders.keys() - found.keys():
            self._drop(name)
        for name, folder in found.items():
            if changed is None or name not in self._folders or _touches(changed, folder):
                self._load(name, folder)
        self._folders = found
        self._relink()

    def _load(self, name: str, folder: Path) -> None:
        declarative = (folder / YAML_FILE).is_file()
        try:
            if declarative and (folder / ENTRY_FILE).is_file():
                raise LoadError("ambiguous_export", f"the folder holds both {ENTRY_FILE} and {YAML_FILE}: keep one")
            if declarative:
                self._read_spec(name, folder / YAML_FILE)
                return
            from .catalogue import LOADING_CATALOGUE

            token = LOADING_CATALOGUE.set(self._catalogue)
            try:
                loaded = load_agent(name, folder, self._ensure_runtime())
            finally:
                LOADING_CATALOGUE.reset(token)
        except LoadError as exc:
            self._record(AgentLoadFailure.of(name, exc, folder / (YAML_FILE if declarative else ENTRY_FILE)))
            return
        self._specs.pop(name, None)
        self._serve(loaded)

    def _read_spec(self, name: str, path: Path) -> None:
        """Keep the validated spec; ``_relink`` compiles it (a broken edit keeps the last good spec)."""
        self._ensure_runtime()
        from .declarative import read_declarative

        self._specs[name] = read_declarative(name, path)
        self._failures.pop(name, None)
        self._unlinked.discard(name)
        logger.info("agent %s read from %s (declarative)", name, path)

    def _relink(self) -> None:
        """Compile every declarative agent against the current catalogue and agents."""
        if not self._specs:
            return
        from .declarative import compile_agents
        from .exports import prepare_agents

        def entry_of(name: str) -> Any:
            agent = self._agents.get(name)
            return agent.entry if agent is not None and agent.kind != "declarative" else None

        for name, built in compile_agents(self._specs, self._catalogue, entry_of).items():
            spec = self._specs[name]
            if isinstance(built, LoadError):
                self._record(AgentLoadFailure.of(name, built, spec.file.path))
                self._unlinked.add(name)
                continue
            prepare_agents([built])
            if name in self._unlinked:  # a failure of reading the file stays until the file is fixed
                self._unlinked.discard(name)
                self._failures.pop(name, None)
            config = DropinConfig(description=spec.description, max_turns=spec.max_turns)
            self._agents[name] = LoadedAgent(
                name=name,
                source=spec.file.path,
                kind="declarative",
                entry=built,
                workflow=None,
                workflow_input=None,
                config=config,
                tools=tuple(tool.name for tool in built.tools),
                runtime=self._ensure_runtime(),
                module=None,
            )

    def _serve(self, loaded: LoadedAgent) -> None:
        name = loaded.name
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
        self._specs.pop(name, None)
        self._unlinked.discard(name)
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
