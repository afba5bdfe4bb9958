"""Running celgate in tests, and checking what it answers."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path
from typing import Any

from aiohttp import web

__all__ = ["REPO", "Celgate", "assert_openai_error", "free_port"]

REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Celgate:
    """A running celgate: its base URL (…/v1), root URL and app."""

    url: str
    root: str
    app: web.Application
    runner: web.AppRunner | None = None

    async def stop(self) -> None:
        """Stop this celgate now (its cleanup runs: log files are flushed and closed); idempotent."""
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()


def free_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_openai_error(body: Any, *, type_: str | None = None, code: str | None = None) -> dict[str, Any]:
    """``body`` is exactly ``{"error": {"message", "type", "param", "code"}}``; returns the inner object."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    if type_ is not None:
        assert error["type"] == type_, error
    if code is not None:
        assert error["code"] == code, error
    return error
