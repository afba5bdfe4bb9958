"""Fixtures for the proxy end-to-end tests: a raw HTTP client, the real openai client, celgate set up as
the test module's ``POLICY`` says, and the demo setup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest

from tests.helpers import REPO, Celgate, OpenAIFactory, StartCelgate, write_policy
from tests.helpers.fakeupstream import FakeUpstream


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """The raw byte-level client (no decompression, nothing added)."""
    async with aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


@pytest.fixture
async def oai() -> AsyncIterator[OpenAIFactory]:
    """``oai(base_url, api_key=...)``: a real ``AsyncOpenAI`` client, without retries, closed after the test."""
    clients: list[openai.AsyncOpenAI] = []

    def make(base_url: str, api_key: str = "sk-test-client", **kwargs: object) -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=20, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


# `celgate serve --upstream demo` from the repository root: starter policy, ./agents, ./tools (no chunk delay).
DEMO: dict[str, object] = {
    "upstream": "demo",
    "no_policy": False,
    "policies": REPO / "policies",
    "agents": REPO / "agents",
    "tools": REPO / "tools",
    "demo_delay_ms": 0,
}


@pytest.fixture
async def demo(start_celgate: StartCelgate) -> Celgate:
    """celgate as `celgate serve --upstream demo` runs it from the repository root (``DEMO``)."""
    return await start_celgate(**DEMO)


@pytest.fixture
async def gate(
    request: pytest.FixtureRequest, upstream: FakeUpstream, start_celgate: StartCelgate, tmp_path: Path
) -> Celgate:
    """celgate enforcing the test module's ``POLICY`` in front of the fake upstream (a module may define its own)."""
    policies = write_policy(tmp_path, request.module.POLICY)
    return await start_celgate(upstream=upstream.base_url, no_policy=False, policies=policies)
