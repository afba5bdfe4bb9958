"""Load limits (429, never a queue) and the process lifecycle (SIGTERM drain, SIGHUP reload) on a real process."""

from __future__ import annotations

import asyncio
import hashlib
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import StartCelgate, assert_openai_error, write_policy
from tests.helpers.fakeupstream import FakeUpstream, Script, text_stream
from tests.helpers.process import Running

KEY = "sk-limited-principal-123456"
POLICY = f"""\
version: 1
defaults:
  decision: allow
principals:
  - id: tiny
    key_sha256: {hashlib.sha256(KEY.encode()).hexdigest()}
    max_concurrent_streams: 1
"""
MESSAGES = [{"role": "user", "content": "hi"}]


async def open_stream(http: aiohttp.ClientSession, url: str, **headers: str) -> aiohttp.ClientResponse:
    return await http.post(
        url + "/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True}, headers=headers
    )


def slow_stream(words: int, delay: float) -> Script:
    return Script(steps=text_stream([f" w{i}" for i in range(words)], delay=delay))


async def test_past_the_global_limit_requests_get_a_429_with_retry_after(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession
) -> None:
    gate = await start_celgate(upstream=upstream.base_url, max_concurrent_streams=2)
    upstream.push(slow_stream(20, 0.05), slow_stream(20, 0.05))
    held = [await open_stream(http, gate.url) for _ in range(2)]
    refused = await open_stream(http, gate.url)
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"
    assert_openai_error(await refused.json(), code="concurrency_limit")
    for response in held:
        assert response.status == 200 and (await response.read()).endswith(b"data: [DONE]\n\n")
    again = await open_stream(http, gate.url)
    assert again.status == 200  # slots came back
    await again.read()
    async with http.get(gate.root + "/metrics") as response:
        assert 'celgate_limited_total{kind="streams",scope="global"} 1.0' in await response.text()


async def test_a_principal_limit_comes_from_its_policy_attributes(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gate = await start_celgate(upstream=upstream.base_url, no_policy=False, policies=write_policy(tmp_path, POLICY))
    upstream.push(slow_stream(10, 0.05), slow_stream(3, 0.0))
    first = await open_stream(http, gate.url, Authorization=f"Bearer {KEY}")
    second = await open_stream(http, gate.url, Authorization=f"Bearer {KEY}")
    other = await open_stream(http, gate.url, Authorization="Bearer sk-someone-else")
    assert (first.status, second.status, other.status) == (200, 429, 200)
    await first.read(), await other.read()


async def read_events(response: aiohttp.ClientResponse) -> bytes:
    try:
        return await response.read()
    except aiohttp.ClientPayloadError:
        return b""


async def test_sigterm_drains_streams_then_ends_them_in_band_and_exits_0(
    upstream: FakeUpstream, serve: Callable[..., Awaitable[Running]], tmp_path: Path
) -> None:
    running = await serve(
        "--upstream",
        upstream.base_url,
        "--no-policy",
        "--drain-seconds",
        "1",
        "--no-upstream-check",
    )
    upstream.push(slow_stream(3, 0.1), slow_stream(100, 0.1))  # one ends within the drain, one does not
    async with aiohttp.ClientSession() as http:
        short = await open_stream(http, running.root + "/v1")
        long = await open_stream(http, running.root + "/v1")
        await asyncio.sleep(0.1)
        running.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        with pytest.raises(aiohttp.ClientConnectionError):  # no new connections while draining
            async with http.get(running.root + "/readyz"):
                pass
        short_body, long_body = await read_events(short), await read_events(long)
    assert short_body.endswith(b"data: [DONE]\n\n")
    assert b"shutting_down" in long_body and b"[DONE]" not in long_body
    assert await asyncio.wait_for(running.process.wait(), 10) == 0


async def test_sighup_reloads_the_policy(
    upstream: FakeUpstream, serve: Callable[..., Awaitable[Running]], tmp_path: Path
) -> None:
    policies = write_policy(tmp_path, "version: 1\ndefaults:\n  decision: allow\n")
    running = await serve(
        "--upstream",
        upstream.base_url,
        "--policies",
        str(policies),
        "--no-watch",
        "--no-upstream-check",
    )
    async with aiohttp.ClientSession() as http:
        body = {"model": "m", "messages": MESSAGES}
        async with http.post(running.root + "/v1/chat/completions", json=body) as response:
            assert response.status == 200
        (policies / "policy.yaml").write_text("version: 1\ndefaults:\n  decision: deny\n")
        running.process.send_signal(signal.SIGHUP)
        for _ in range(100):
            await asyncio.sleep(0.05)
            async with http.post(running.root + "/v1/chat/completions", json=body) as response:
                if response.status == 403:
                    break
        assert response.status == 403
