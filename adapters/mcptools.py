"""MCP gateway tools: a YAML file in ``--tools`` naming an MCP server whose tools join the catalogue.

::

    kind: mcp
    name: docs                 # tool.server in policy; the default prefix is "docs_"
    url: http://127.0.0.1:8931/mcp          # streamable HTTP ...
    headers: {Authorization: "Bearer ${DOCS_TOKEN}"}
    # command: python          # ... or a stdio server celgate starts ("python": celgate's interpreter)
    # args: [docs_server.py]
    # env: {DOCS_ROOT: /srv/docs}
    # cwd: .                   # relative to this file's folder
    prefix: docs_
    tools: ["search*"]         # optional: only these of the server's tools (globs)
    timeout: 10                # seconds to connect and list, and per call (default 10)

The server is reached through the Agents SDK's own MCP client
(``MCPServerStreamableHttp`` / ``MCPServerStdio``) and each tool becomes an SDK
``FunctionTool`` with ``MCPUtil.to_function_tool``, renamed ``<prefix><tool>``.
The session lives in one task from connect to cleanup (the SDK's client
holds anyio cancel scopes, which must be left in the task that entered
them); a server that cannot be reached or listed is a load failure
(``mcp_unreachable``) and the rest of the catalogue serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.mcp import MCPServer, MCPServerStdio, MCPServerStreamableHttp, MCPUtil

from agents import FunctionTool
from celgate.policy.globs import GlobList

from .errors import LoadError
from .yamlspec import SpecError, SpecFile, mapping_field, name_field, positive_field

__all__ = ["McpConnection", "McpServerSpec", "read_mcp_server"]

_KEYS = {"kind", "name", "url", "headers", "command", "args", "env", "cwd", "prefix", "tools", "timeout"}
_DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class McpServerSpec:
    """A validated MCP server file: exactly one of ``url`` (streamable HTTP) and ``command`` (stdio)."""

    name: str
    prefix: str
    url: str | None
    headers: dict[str, str]
    command: str | None
    args: list[str]
    env: dict[str, str] | None
    cwd: Path | None
    tools: GlobList | None
    timeout: float

    @property
    def origin(self) -> str:
        """Where its tools run, for provenance: the URL or the command line."""
        return self.url or " ".join([self.command or "", *self.args])


def read_mcp_server(spec: SpecFile) -> McpServerSpec:
    """Validate an MCP server file; raises ``SpecError`` naming the field."""
    data = spec.data
    spec.check_keys(data, _KEYS)
    name = name_field(data, "name")
    url, command = data.get("url"), data.get("command")
    if (url is None) == (command is None):
        raise SpecError("url", "give exactly one of url (streamable HTTP) and command (stdio)")
    if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
        raise SpecError("url", "url must be an http(s) URL")
    if command is not None and (not isinstance(command, str) or not command):
        raise SpecError("command", "command must be a non-empty string")
    prefix = data.get("prefix", f"{name}_")
    if not isinstance(prefix, str):
        raise SpecError("prefix", "prefix must be a string")
    cwd = data.get("cwd")
    return McpServerSpec(
        name=name,
        prefix=prefix,
        url=url,
        headers=mapping_field(data, "headers"),
        command=command,
        args=_strings(data, "args"),
        env=mapping_field(data, "env") if "env" in data else None,
        cwd=(spec.path.parent / cwd) if isinstance(cwd, str) else None,
        tools=GlobList(_strings(data, "tools")) if "tools" in data else None,
        timeout=positive_field(data, "timeout", _DEFAULT_TIMEOUT),
    )


class McpConnection:
    """One connected MCP server: its tools, and the task that holds its session until ``close``."""

    def __init__(self, spec: McpServerSpec, file: Path) -> None:
        self.spec = spec
        self._file = file
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> list[FunctionTool]:
        """Connect and list the tools; raises ``LoadError`` (``mcp_unreachable``) when the server can't be used."""
        listed: asyncio.Future[list[FunctionTool]] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._hold(listed), name=f"celgate-mcp-{self.spec.name}")
        try:
            async with asyncio.timeout(self.spec.timeout):
                return await listed
        except Exception as exc:
            await self.close()
            where = self.spec.origin
            raise LoadError(
                "mcp_unreachable", f"MCP server {self.spec.name!r} ({where}) cannot be used: {_reason(exc)}", self._file
            ) from exc

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), self.spec.timeout)
            self._task.cancel()

    async def _hold(self, listed: asyncio.Future[list[FunctionTool]]) -> None:
        server: Any = self._server()  # the SDK leaves connect() and cleanup() unannotated
        try:
            await server.connect()
            tools = await server.list_tools()
            wanted = [t for t in tools if self.spec.tools is None or self.spec.tools.matches(t.name)]
            function_tools = [
                MCPUtil.to_function_tool(tool, server, False, tool_name_override=self.spec.prefix + tool.name)
                for tool in wanted
            ]
            if not listed.done():
                listed.set_result(function_tools)
            await self._stop.wait()
        except Exception as exc:
            if not listed.done():
                listed.set_exception(exc)
        finally:
            with contextlib.suppress(Exception):
                await server.cleanup()

    def _server(self) -> MCPServer:
        spec = self.spec
        if spec.url is not None:
            http: Any = {"url": spec.url, "headers": spec.headers, "timeout": spec.timeout}
            return MCPServerStreamableHttp(http, name=spec.name, client_session_timeout_seconds=spec.timeout)
        command = sys.executable if spec.command == "python" else spec.command  # celgate's own interpreter
        stdio: Any = {"command": command, "args": spec.args}
        if spec.env is not None:
            stdio["env"] = spec.env
        if spec.cwd is not None:
            stdio["cwd"] = str(spec.cwd)
        return MCPServerStdio(stdio, name=spec.name, client_session_timeout_seconds=spec.timeout)


def _reason(exc: BaseException) -> str:
    """The innermost useful message: MCP errors arrive wrapped in exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _strings(data: dict[str, Any], key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str | int | float) for item in value):
        raise SpecError(key, f"{key} must be a list of strings")
    return [str(item) for item in value]
