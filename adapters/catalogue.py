"""The gateway tool catalogue: every tool in ``--tools``, defined once, governed and measured centrally.

The directory's top-level files are the catalogue (names starting with
``.`` or ``_`` are skipped, so helpers can sit beside the tools):

- ``*.py``: Python tools (``pytools``), provenance ``gateway`` with the module as origin;
- ``*.yaml`` / ``*.yml`` with ``kind: http``: one HTTP tool (``httptools``), origin its URL;
- ``*.yaml`` / ``*.yml`` with ``kind: mcp``: one MCP server's tools (``mcptools``), provenance
  ``mcp`` with the server named.

Every tool is governed once, here (``guardrails.govern_gateway_tool``): the
``tool_call`` point decides each call before it runs, and each execution is
recorded. A file that fails to load is recorded (``failures``, counted once
per distinct failure through ``GatewayHooks.tool_load_failed``) and its
previous tools keep serving; the other files are not affected. A tool name
already taken by an earlier file (by file name order) is a ``duplicate_tool``
failure of the later file. Reloads (watching, or ``load``) replace one file's
tools at once; runs in flight keep the tool objects they hold.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from watchfiles import awatch

from agents import FunctionTool
from celgate.policy.globs import GlobList

from .errors import LoadError, ToolLoadFailure
from .guardrails import Provenance, govern_gateway_tool, provenance_of
from .host import GatewayHooks
from .httptools import http_function_tool, read_http_tool
from .mcptools import McpConnection, read_mcp_server
from .pytools import load_python_tools
from .yamlspec import SpecError, read_spec

__all__ = ["LOADING_CATALOGUE", "ToolCatalogue", "gateway_tool_handle", "is_glob"]

logger = logging.getLogger("celgate.tools")

_YAML_SUFFIXES = (".yaml", ".yml")
_GLOB_CHARS = frozenset("*?[")

# The catalogue of the registry importing a drop-in, for ``celgate.adapters.gateway_tool``.
LOADING_CATALOGUE: ContextVar[ToolCatalogue | None] = ContextVar("celgate_loading_catalogue", default=None)


def is_glob(pattern: str) -> bool:
    return not _GLOB_CHARS.isdisjoint(pattern)


@dataclass(slots=True)
class _FileTools:
    """What one file contributes: its tools, and the MCP session it holds open."""

    tools: list[FunctionTool]
    connection: McpConnection | None = None


class ToolCatalogue:
    """The tools of one directory; every method runs on the event loop."""

    def __init__(self, directory: Path, hooks: GatewayHooks, *, watch: bool) -> None:
        self._directory = directory.resolve()
        self._hooks = hooks
        self._watch = watch
        self._files: dict[Path, _FileTools] = {}
        self._failures: dict[Path, ToolLoadFailure] = {}
        self._tools: dict[str, FunctionTool] = {}
        self._session: aiohttp.ClientSession | None = None

    async def load(self) -> None:
        """(Re)load every file of the directory."""
        await self._sync(changed=None)

    async def watch(self, on_change: Callable[[], Awaitable[None] | None]) -> None:
        """Reload changed files until cancelled, then call ``on_change`` (agents re-resolve their tools)."""
        if not self._watch or not self._directory.is_dir():
            return
        async for changes in awatch(self._directory):
            await self._sync({Path(path) for _, path in changes})
            result = on_change()
            if result is not None:
                await result

    async def close(self) -> None:
        """Close every MCP session and the HTTP tools' session."""
        files, self._files = self._files, {}
        for loaded in files.values():
            if loaded.connection is not None:
                await loaded.connection.close()
        if self._session is not None:
            await self._session.close()

    def get(self, name: str) -> FunctionTool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def matching(self, pattern: str) -> list[FunctionTool]:
        """The tools a name or glob selects, by name."""
        globs = GlobList([pattern])
        return [self._tools[name] for name in sorted(self._tools) if globs.matches(name)]

    def describe(self) -> list[dict[str, Any]]:
        """Every tool as ``GET /admin/tools`` lists it."""
        return [_describe(self._tools[name]) for name in sorted(self._tools)]

    def failures(self) -> list[ToolLoadFailure]:
        """Every current failure, by file (``as_json()`` each for ``/admin/tools/errors``)."""
        return [self._failures[path] for path in sorted(self._failures)]

    def session(self) -> aiohttp.ClientSession:
        """The HTTP tools' shared session, made on first use (on the event loop)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        return self._session

    async def _sync(self, changed: set[Path] | None) -> None:
        found = set(self._tool_files())
        for gone in [path for path in self._files if path not in found]:
            await self._forget(gone)
        for path in [p for p in self._failures if p not in found]:
            del self._failures[path]
        for path in sorted(found):
            if changed is None or path in changed or path not in self._files:
                await self._load(path)
        self._index()

    def _tool_files(self) -> Iterator[Path]:
        if not self._directory.is_dir():
            return
        for path in sorted(self._directory.iterdir()):
            if path.name.startswith((".", "_")) or not path.is_file():
                continue
            if path.suffix == ".py" or path.suffix in _YAML_SUFFIXES:
                yield path

    async def _load(self, path: Path) -> None:
        try:
            loaded = await self._read(path)
        except LoadError as exc:
            self._record(ToolLoadFailure.of(path.name, exc, path))
            return
        previous = self._files.get(path)
        self._files[path] = loaded
        self._failures.pop(path, None)
        if previous is not None and previous.connection is not None:
            await previous.connection.close()
        logger.info("tools loaded from %s: %s", path, ", ".join(t.name for t in loaded.tools) or "none")

    async def _read(self, path: Path) -> _FileTools:
        if path.suffix == ".py":
            tools = load_python_tools(path)
            origin = str(path)
            return _FileTools([govern_gateway_tool(t, Provenance("gateway", origin)) for t in tools])
        spec = read_spec(path)
        kind = spec.data.get("kind")
        try:
            if kind == "http":
                http = read_http_tool(spec)
                tool = http_function_tool(http, self.session)
                return _FileTools([govern_gateway_tool(tool, Provenance("gateway", http.url))])
            if kind == "mcp":
                server = read_mcp_server(spec)
            else:
                raise SpecError("kind", "kind must be http (one HTTP tool) or mcp (an MCP server)")
        except SpecError as problem:
            raise spec.error(problem) from None
        connection = McpConnection(server, path)
        tools = await connection.open()
        provenance = Provenance("mcp", server.origin, server.name)
        return _FileTools([govern_gateway_tool(t, provenance) for t in tools], connection)

    async def _forget(self, path: Path) -> None:
        loaded = self._files.pop(path)
        if loaded.connection is not None:
            await loaded.connection.close()
        logger.info("tools of %s removed (the file is gone)", path)

    def _index(self) -> None:
        """Name -> tool over every file in name order; a name taken earlier fails the later file."""
        tools: dict[str, FunctionTool] = {}
        for path in sorted(self._files):
            loaded = self._files[path]
            clash = sorted(t.name for t in loaded.tools if t.name in tools)
            if clash:
                message = f"tool name(s) already defined by an earlier file: {', '.join(clash)}"
                self._record(ToolLoadFailure(path.name, "duplicate_tool", message, path))
                continue
            if (failure := self._failures.get(path)) is not None and failure.kind == "duplicate_tool":
                del self._failures[path]
            tools.update((t.name, t) for t in loaded.tools)
        self._tools = tools

    def _record(self, failure: ToolLoadFailure) -> None:
        """Keep the failure; log and count it only if it differs from the one already known."""
        path = failure.file
        previous = self._failures.get(path)
        if previous is not None and (previous.kind, previous.message) == (failure.kind, failure.message):
            return
        self._failures[path] = failure
        serving = "; its previous tools keep serving" if path in self._files else ""
        logger.error("tools of %s failed to load (%s)%s: %s", path, failure.kind, serving, failure.message)
        self._hooks.tool_load_failed(failure.name, failure.kind)


def _describe(tool: FunctionTool) -> dict[str, Any]:
    provenance = provenance_of(tool)
    assert provenance is not None  # every catalogue tool is governed when loaded
    return {
        "name": tool.name,
        "description": tool.description,
        "source": provenance.source,
        "origin": provenance.origin,
        "server": provenance.server or None,
        "parameters": tool.params_json_schema,
    }


def gateway_tool_handle(name: str) -> FunctionTool:
    """A drop-in's handle on catalogue tool ``name``: its schema now, its current implementation at each call.

    Only while the registry imports a drop-in (``LOADING_CATALOGUE``); the
    handle is gated like the tool itself, and the catalogue's tool records
    the execution.
    """
    catalogue = LOADING_CATALOGUE.get()
    if catalogue is None:
        raise LookupError("celgate: gateway_tool() works in an agent.py that celgate loads, with --tools set")
    tool = catalogue.get(name)
    provenance = provenance_of(tool)
    if tool is None or provenance is None:
        raise LookupError(f"celgate: no gateway tool named {name!r} (loaded: {', '.join(catalogue.names()) or 'none'})")

    async def invoke(ctx: Any, arguments: str) -> Any:
        current = catalogue.get(name)
        if current is None:
            return f"celgate: the gateway tool {name!r} is no longer loaded"
        return await current.on_invoke_tool(ctx, arguments)

    handle = FunctionTool(
        name=tool.name,
        description=tool.description,
        params_json_schema=tool.params_json_schema,
        on_invoke_tool=invoke,
        strict_json_schema=tool.strict_json_schema,
    )
    return govern_gateway_tool(handle, provenance, record=False)
