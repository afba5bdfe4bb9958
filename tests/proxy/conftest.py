"""Fixtures for the proxy end-to-end tests: a raw HTTP client, the real openai client, the demo setup."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import openai
import pytest

from tests.helpers import REPO, Celgate


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """The raw byte-level client (no decompression, nothing added)."""
    async with aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


@pytest.fixture
async def oai() -> AsyncIterator[Callable[..., openai.AsyncOpenAI]]:
    """``oai(base_url, api_key=...)``: a real ``AsyncOpenAI`` client, without retries, closed after the test."""
    clients: list[openai.AsyncOpenAI] = []

    def make(base_url: str, api_key: str = "sk-test-client", **kwargs: object) -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=20, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def demo(start_celgate: Callable[..., Awaitable[Celgate]]) -> Celgate:
    """celgate as `celgate serve --upstream demo` runs it from the repository root: starter policy, ./agents."""
    return await start_celgate(
        upstream="demo", no_policy=False, policies=REPO / "policies", agents=REPO / "agents", demo_delay_ms=0
    )
