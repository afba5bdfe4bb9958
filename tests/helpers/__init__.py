"""Test helpers: a running celgate, checking what it answers, and writing policies.

The scripted upstreams (HTTP and raw-socket), the ``celgate`` process, the
Node clients and what a running celgate reports live in the modules beside this one.
"""

from __future__ import annotations

import dataclasses
import socket
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
from aiohttp import web

from celgate.proxy.keys import SETTINGS
from celgate.proxy.server import Server

__all__ = [
    "ALLOW_PARIS_WEATHER",
    "ALLOW_REQUESTS",
    "REPO",
    "Celgate",
    "OpenAIFactory",
    "StartCelgate",
    "assert_openai_error",
    "free_port",
    "replace",
    "write_policy",
    "write_yaml",
]

REPO = Path(__file__).resolve().parents[2]
# The head of most test policies: deny by default, every request admitted; tool rules follow.
ALLOW_REQUESTS = """\
version: 1
defaults:
  decision: deny
rules:
  - name: requests
    on: request
    effect: allow
"""
# ALLOW_REQUESTS, and the weather tool for Paris only: the rule most interception tests decide by.
ALLOW_PARIS_WEATHER = (
    ALLOW_REQUESTS
    + """\
  - name: weather-in-paris-only
    on: tool_call
    tools: ["get_weather"]
    when: tool.arguments.city == "Paris"
    effect: allow
"""
)


@dataclasses.dataclass
class Celgate:
    """A running celgate: its base URL (…/v1), root URL and app."""

    url: str
    root: str
    app: web.Application
    server: Server | None = None

    @classmethod
    async def start(cls, app: web.Application) -> Celgate:
        """Serve ``app`` on an ephemeral loopback port, the way ``celgate serve`` does."""
        server = Server(app, "127.0.0.1", 0, head_timeout=app[SETTINGS].client_timeout)
        await server.start()
        return cls(url=server.url + "/v1", root=server.url, app=app, server=server)

    async def stop(self) -> None:
        """Stop this celgate now (its cleanup runs: log files are flushed and closed); idempotent."""
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop()


# The root conftest's ``start_celgate(**settings)`` and the proxy conftest's ``oai(base_url, ...)``.
StartCelgate = Callable[..., Awaitable[Celgate]]
OpenAIFactory = Callable[..., openai.AsyncOpenAI]


def free_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_openai_error(body: Any, *, type_: str | None = None, code: str | None = None) -> dict[str, Any]:
    """``body`` is exactly ``{"error": {"message", "type", "param", "code"}}`` (in-band errors add ``status``)."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) - {"status"} == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    if type_ is not None:
        assert error["type"] == type_, error
    if code is not None:
        assert error["code"] == code, error
    return error


def write_yaml(directory: Path, text: str, name: str = "policy.yaml") -> Path:
    """``directory/<name>`` holding ``text`` dedented (indented triple-quoted YAML reads as written)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def write_policy(directory: Path, text: str, name: str = "policy.yaml") -> Path:
    """``directory/policies/<name>`` holding ``text``, as ``write_yaml`` writes it; returns the policy directory."""
    return write_yaml(directory / "policies", text, name).parent


def replace(path: Path, text: str) -> None:
    """Save like an editor that writes atomically: one complete file, never a half-written one."""
    temp = path.with_name(f".{path.name}.tmp")  # a dot file: the watchers ignore it
    temp.write_text(text)
    temp.replace(path)
