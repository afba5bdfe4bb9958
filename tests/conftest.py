"""Shared fixtures: the scripted fake upstream and celgate itself, on real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.helpers.fakeupstream import FakeUpstream
from tests.helpers.harness import Celgate


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def start_celgate() -> AsyncIterator[Callable[..., Awaitable[Celgate]]]:
    """Start celgate with ``Settings`` overrides; everything started is stopped after the test."""
    from celgate.proxy import create_app
    from celgate.proxy.settings import Settings

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
