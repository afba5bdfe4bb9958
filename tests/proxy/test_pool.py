"""The upstream pool across connection lifetimes: idle connections the upstream closed are never used."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import openai
import pytest
from aiohttp import web

from tests.helpers import StartCelgate


@pytest.fixture
async def short_keepalive_upstream() -> AsyncIterator[tuple[str, list[int]]]:
    """An upstream that closes idle keep-alive connections after 50 ms, counting connections per request."""
    peers: list[int] = []

    async def chat(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername")[1])
        return web.json_response(
            {
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=0.05)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1", peers
    await runner.cleanup()


async def test_connections_are_reused_and_closed_ones_replaced(
    short_keepalive_upstream: tuple[str, list[int]], start_celgate: StartCelgate
) -> None:
    url, peers = short_keepalive_upstream
    celgate = await start_celgate(upstream=url)
    client = openai.AsyncOpenAI(base_url=celgate.url, api_key="sk-test", max_retries=0)
    try:
        ask = lambda: client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        await ask()
        await ask()  # back to back: the same upstream connection
        await asyncio.sleep(0.2)  # the upstream closes the idle connection
        for _ in range(3):
            assert (await ask()).choices[0].message.content == "ok"
    finally:
        await client.close()
    assert peers[0] == peers[1]
    assert peers[2] != peers[1]
    assert len(peers) == 5
