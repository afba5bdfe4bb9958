"""Shared fixtures: the scripted fake upstream and celgate itself, on real sockets."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from fakeupstream import FakeUpstream

REPO = Path(__file__).resolve().parent.parent


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


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def start_celgate() -> AsyncIterator[Callable[..., Awaitable[Celgate]]]:
    """Start celgate with ``Settings`` overrides; everything started is stopped after the test."""
    from proxy import create_app
    from proxy.settings import Settings

    started: list[Celgate] = []

    async def start(**overrides: Any) -> Celgate:
        defaults: dict[str, Any] = {
            "port": 0,
            "no_policy": True,
            "access_log": None,
            "watch": False,
            "agents": Path("/nonexistent-agents-dir"),
            "upstream_check": False,
        }
        settings = Settings(**{**defaults, **overrides})
        app = create_app(settings)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        root = f"http://127.0.0.1:{runner.addresses[0][1]}"
        started.append(Celgate(url=root + "/v1", root=root, app=app, runner=runner))
        return started[-1]

    yield start
    for instance in reversed(started):
        await instance.stop()


@pytest.fixture
async def celgate(upstream: FakeUpstream, start_celgate: Callable[..., Awaitable[Celgate]]) -> Celgate:
    """celgate without a policy in front of the fake upstream."""
    return await start_celgate(upstream=upstream.base_url)


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
