"""Shared fixtures: the scripted fake upstream and celgate itself, on real sockets.

``serve`` (celgate as a subprocess) and ``node_env`` (the Node clients) live in tests/helpers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Celgate, StartCelgate
from tests.helpers.fakeupstream import FakeUpstream
from tests.helpers.node import node_env
from tests.helpers.process import serve
from tests.helpers.rawupstream import RawUpstream

__all__ = ["node_env", "serve"]  # fixtures defined in tests/helpers, offered to every test


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    """A raw-socket keep-alive upstream (``tests/helpers/rawupstream.py``)."""
    server = RawUpstream()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def start_celgate() -> AsyncIterator[StartCelgate]:
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
            "tools": Path("/nonexistent-tools-dir"),
            "upstream_check": False,
        }
        settings = Settings(**{**defaults, **overrides})
        started.append(await Celgate.start(create_app(settings)))
        return started[-1]

    yield start
    for instance in reversed(started):
        await instance.stop()


@pytest.fixture
async def celgate(upstream: FakeUpstream, start_celgate: StartCelgate) -> Celgate:
    """celgate without a policy in front of the fake upstream."""
    return await start_celgate(upstream=upstream.base_url)
