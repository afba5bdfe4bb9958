"""Every error celgate returns: exact status and the OpenAI error shape; upstream errors passed through verbatim."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from celgate.proxy.settings import UpstreamTimeouts
from tests.helpers import Celgate, OpenAIFactory, StartCelgate, assert_openai_error, free_port
from tests.helpers.fakeupstream import FakeUpstream, Script, Step, text_stream

MESSAGES = [{"role": "user", "content": "Hi"}]
PROMPT = {"model": "fake-model", "messages": MESSAGES}


async def post_chat(
    http: aiohttp.ClientSession, celgate: Celgate, **kwargs: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.post(celgate.url + "/chat/completions", **kwargs) as response:
        raw = await response.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw
        return response.status, body, response


# ------------------------------------------------------------------------------ client mistakes


@pytest.mark.parametrize(
    ("data", "param", "code"),
    [
        (b"{not json", None, "invalid_json"),
        (b"", None, "invalid_json"),
        (b'["a", "list"]', None, "invalid_json"),
        (json.dumps({**PROMPT, "stream": "yes"}).encode(), "stream", "invalid_type"),
        (json.dumps({"messages": MESSAGES}).encode(), "model", "missing_required_parameter"),
        (json.dumps({"model": "fake-model"}).encode(), "messages", "missing_required_parameter"),
        (json.dumps({**PROMPT, "model": 7}).encode(), "model", "invalid_type"),
        (json.dumps({**PROMPT, "tools": {"not": "a list"}}).encode(), "tools", "invalid_type"),
        (json.dumps({**PROMPT, "n": True}).encode(), "n", "invalid_type"),
    ],
)
async def test_bad_request_bodies_are_400(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, data: bytes, param: str | None, code: str
) -> None:
    status, body, response = await post_chat(http, celgate, data=data, headers={"Content-Type": "application/json"})
    assert status == 400
    error = assert_openai_error(body, type_="invalid_request_error", code=code)
    assert error["param"] == param
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["x-request-id"]
    assert upstream.requests == []  # never forwarded


async def test_stream_yes_is_not_a_silent_non_stream(celgate: Celgate, oai: OpenAIFactory) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await oai(celgate.url).chat.completions.create(
            model="fake-model", messages=MESSAGES, extra_body={"stream": "yes"}
        )
    assert info.value.status_code == 400
    error = assert_openai_error({"error": info.value.body}, type_="invalid_request_error", code="invalid_type")
    assert error["param"] == "stream"


async def test_body_over_max_body_bytes_is_413(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession
) -> None:
    celgate = await start_celgate(upstream=upstream.base_url, max_body_bytes=2048)
    big = json.dumps({**PROMPT, "messages": [{"role": "user", "content": "x" * 4096}]}).encode()
    status, body, _ = await post_chat(http, celgate, data=big, headers={"Content-Type": "application/json"})
    assert status == 413
    assert_openai_error(body, type_="invalid_request_error", code="request_too_large")
    small = json.dumps(PROMPT).encode()
    assert (await post_chat(http, celgate, data=small, headers={"Content-Type": "application/json"}))[0] == 200
    assert len(upstream.requests) == 1


async def test_chunked_body_over_max_body_bytes_is_413_without_reading_the_rest(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession
) -> None:
    """No Content-Length: celgate stops at the limit and answers while the client still holds the rest."""
    celgate = await start_celgate(upstream=upstream.base_url, max_body_bytes=2048)
    rest_requested = asyncio.Event()
    answered = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b'{"model": "fake-model", "messages": [{"role": "user", "content": "'
        for _ in range(3):
            yield b"x" * 1024
        rest_requested.set()
        await answered.wait()  # hold the rest until celgate has answered
        yield b'"}]}'

    async with http.post(
        celgate.url + "/chat/completions", data=body(), headers={"Content-Type": "application/json"}
    ) as response:
        answered.set()
        assert "Content-Length" not in response.request_info.headers
        assert response.status == 413
        assert_openai_error(json.loads(await response.read()), code="request_too_large")
    assert upstream.requests == []


async def test_passthrough_upload_over_max_body_bytes_is_413(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession
) -> None:
    celgate = await start_celgate(upstream=upstream.base_url, max_body_bytes=2048)
    for data in (b"\0" * 4096, _chunks(b"\0" * 1024, 4)):
        async with http.post(
            celgate.url + "/files", data=data, headers={"Content-Type": "application/octet-stream"}
        ) as response:
            assert response.status == 413
            assert_openai_error(await response.json(), code="request_too_large")


async def _chunks(piece: bytes, count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield piece


async def test_unknown_path_is_404_in_openai_shape(celgate: Celgate, http: aiohttp.ClientSession) -> None:
    async with http.get(celgate.root + "/nope") as response:
        assert response.status == 404
        assert_openai_error(await response.json(), type_="invalid_request_error", code="not_found")
        assert response.headers["x-request-id"]


async def test_wrong_method_is_405_in_openai_shape(celgate: Celgate, http: aiohttp.ClientSession) -> None:
    async with http.post(celgate.root + "/healthz") as response:
        assert response.status == 405
        assert_openai_error(await response.json(), code="method_not_allowed")
        assert "GET" in response.headers["Allow"]


# --------------------------------------------------------------------- upstream faults before headers


async def test_upstream_refused_is_502(
    start_celgate: StartCelgate, http: aiohttp.ClientSession, oai: OpenAIFactory
) -> None:
    celgate = await start_celgate(upstream=f"http://127.0.0.1:{free_port()}/v1")
    for stream in (False, True):
        status, body, _ = await post_chat(http, celgate, json={**PROMPT, "stream": stream})
        assert status == 502
        assert_openai_error(body, type_="upstream_error", code="upstream_unreachable")
    with pytest.raises(openai.InternalServerError) as info:
        await oai(celgate.url).chat.completions.create(model="fake-model", messages=MESSAGES)
    assert info.value.status_code == 502
    async with http.get(celgate.url + "/models") as response:
        assert response.status == 502
    async with http.post(celgate.url + "/embeddings", json={"model": "e", "input": "x"}) as response:
        assert response.status == 502
        assert_openai_error(await response.json(), code="upstream_unreachable")


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_reset_before_headers_is_502(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, stream: bool
) -> None:
    upstream.push(Script(reset=True))
    status, body, _ = await post_chat(http, celgate, json={**PROMPT, "stream": stream})
    assert status == 502
    assert_openai_error(body, type_="upstream_error", code="upstream_reset")


async def test_upstream_closing_before_headers_is_502(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.push(Script(garbage=b""))  # an orderly close, no response at all
    status, body, _ = await post_chat(http, celgate, json=PROMPT)
    assert status == 502
    assert_openai_error(body, type_="upstream_error", code="upstream_reset")


@pytest.mark.parametrize(
    "garbage",
    [b"SSH-2.0-OpenSSH_9.6\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 8, b"HTTP/1.1 abc nonsense\r\n\r\n"],
)
async def test_upstream_garbage_is_502(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, garbage: bytes
) -> None:
    upstream.push(Script(garbage=garbage))
    status, body, _ = await post_chat(http, celgate, json=PROMPT)
    assert status == 502
    error = assert_openai_error(body, type_="upstream_error")
    assert error["code"] in ("upstream_bad_response", "upstream_reset")


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_first_byte_timeout_is_504(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession, stream: bool
) -> None:
    celgate = await start_celgate(upstream=upstream.base_url, timeouts=UpstreamTimeouts(first_byte=0.3))
    upstream.push(Script(delay=30, steps=text_stream(["late"])))
    status, body, _ = await post_chat(http, celgate, json={**PROMPT, "stream": stream})
    assert status == 504
    assert_openai_error(body, type_="upstream_error", code="upstream_timeout")


async def test_first_byte_timeout_applies_again_on_a_reused_upstream_connection(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession
) -> None:
    """A stream switches its connection to the idle timeout; the next request on it waits first_byte again."""
    celgate = await start_celgate(upstream=upstream.base_url, timeouts=UpstreamTimeouts(first_byte=0.3, idle=10))
    upstream.push(Script(steps=text_stream(["ok"])), Script(delay=30, steps=text_stream(["late"])))
    async with http.post(celgate.url + "/chat/completions", json={**PROMPT, "stream": True}) as response:
        assert b"[DONE]" in await response.read()
    status, body, _ = await post_chat(http, celgate, json={**PROMPT, "stream": True})
    assert status == 504
    assert_openai_error(body, code="upstream_timeout")


async def test_non_stream_body_stalling_past_idle_timeout_is_504(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession
) -> None:
    celgate = await start_celgate(upstream=upstream.base_url, timeouts=UpstreamTimeouts(idle=0.3))
    upstream.push(
        Script(headers={"Content-Type": "application/json"}, steps=[Step(b'{"id": "chatcmpl-'), Step(stall=30)])
    )
    status, body, _ = await post_chat(http, celgate, json=PROMPT)
    assert status == 504
    assert_openai_error(body, type_="upstream_error", code="upstream_timeout")
    await asyncio.wait_for(upstream.closed_early.wait(), timeout=5)


# ---------------------------------------------------------------------------- faults mid-stream


async def test_mid_stream_reset_ends_with_an_error_event_and_no_done(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    steps = [*text_stream(["partial", " answer"], done=False)[:3], Step(reset=True)]
    upstream.push(Script(steps=steps))
    async with http.post(celgate.url + "/chat/completions", json={**PROMPT, "stream": True}) as response:
        assert response.status == 200
        body = await response.read()
    sent = b"".join(step.data for step in steps)
    assert body.startswith(sent)
    event = body[len(sent) :]
    assert event.startswith(b"event: error\ndata: ") and event.endswith(b"\n\n")
    error = assert_openai_error(json.loads(event[len(b"event: error\ndata: ") :]), type_="upstream_error")
    assert error["code"] == "upstream_reset"
    assert b"[DONE]" not in body


async def test_mid_stream_reset_raises_in_the_openai_client(
    celgate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    upstream.push(Script(steps=[*text_stream(["partial"], done=False)[:2], Step(reset=True)]))
    stream = await oai(celgate.url).chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    seen: list[str] = []
    with pytest.raises(openai.APIError) as info:
        async for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "partial"
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "upstream_reset"


async def test_mid_stream_stall_past_idle_timeout_ends_with_an_error_event(
    upstream: FakeUpstream,
    start_celgate: StartCelgate,
    http: aiohttp.ClientSession,
    oai: OpenAIFactory,
) -> None:
    celgate = await start_celgate(upstream=upstream.base_url, timeouts=UpstreamTimeouts(idle=0.3))
    steps = [*text_stream(["before"], done=False)[:2], Step(stall=30, data=b"data: [DONE]\n\n")]
    upstream.push(Script(steps=steps))
    async with http.post(celgate.url + "/chat/completions", json={**PROMPT, "stream": True}) as response:
        assert response.status == 200
        body = await response.read()  # ends: never a hang
    sent = b"".join(step.data for step in steps[:2])
    assert body.startswith(sent)
    event = body[len(sent) :]
    assert event.startswith(b"event: error\n")
    error = assert_openai_error(json.loads(event.split(b"data: ", 1)[1]), type_="upstream_error")
    assert error["code"] == "upstream_timeout"
    assert b"[DONE]" not in body
    await asyncio.wait_for(upstream.closed_early.wait(), timeout=5)

    upstream.push(Script(steps=steps))
    stream = await oai(celgate.url).chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError, match="timed out"):
        async for _ in stream:
            pass


async def test_slow_but_steady_stream_is_not_cut_by_the_idle_timeout(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession
) -> None:
    """The idle timeout is between reads, not a total: a stream longer than it, with short gaps, completes."""
    celgate = await start_celgate(upstream=upstream.base_url, timeouts=UpstreamTimeouts(idle=0.3, first_byte=0.3))
    steps = text_stream([f" w{i}" for i in range(8)], delay=0.1)
    upstream.push(Script(steps=steps))
    async with http.post(celgate.url + "/chat/completions", json={**PROMPT, "stream": True}) as response:
        assert await response.read() == b"".join(step.data for step in steps)


# ------------------------------------------------------------------------ upstream's own errors


RATE_LIMIT = {
    "error": {
        "message": "Rate limit reached for requests",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_429_passes_through_verbatim(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, stream: bool
) -> None:
    upstream.push(
        Script(status=429, json=RATE_LIMIT, headers={"Retry-After": "7", "x-ratelimit-remaining-requests": "0"})
    )
    async with http.post(celgate.url + "/chat/completions", json={**PROMPT, "stream": stream}) as response:
        assert response.status == 429
        assert await response.read() == json.dumps(RATE_LIMIT).encode()
        assert response.headers["Retry-After"] == "7"
        assert response.headers["x-ratelimit-remaining-requests"] == "0"
        assert response.headers["Content-Type"].startswith("application/json")


async def test_upstream_429_reaches_the_openai_client(
    celgate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    upstream.push(Script(status=429, json=RATE_LIMIT, headers={"Retry-After": "7"}))
    with pytest.raises(openai.RateLimitError) as info:
        await oai(celgate.url).chat.completions.create(model="fake-model", messages=MESSAGES)
    assert info.value.status_code == 429
    assert info.value.body == RATE_LIMIT["error"]
    assert info.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize("status", [400, 401, 404, 500, 503])
async def test_upstream_error_statuses_pass_through(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, status: int
) -> None:
    payload = {"error": {"message": f"upstream says {status}", "type": "server_error", "param": None, "code": None}}
    upstream.push(Script(status=status, json=payload, headers={"X-Upstream": "yes"}))
    async with http.post(celgate.url + "/chat/completions", json=PROMPT) as response:
        assert response.status == status
        assert await response.read() == json.dumps(payload).encode()
        assert response.headers["X-Upstream"] == "yes"


async def test_upstream_error_on_a_passthrough_route_passes_through(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.push(Script(status=429, json=RATE_LIMIT, headers={"Retry-After": "3"}))
    async with http.post(celgate.url + "/embeddings", json={"model": "e", "input": "x"}) as response:
        assert response.status == 429
        assert await response.read() == json.dumps(RATE_LIMIT).encode()
        assert response.headers["Retry-After"] == "3"


async def test_celgate_starts_while_the_upstream_is_down(
    start_celgate: StartCelgate, http: aiohttp.ClientSession
) -> None:
    celgate = await start_celgate(upstream=f"http://127.0.0.1:{free_port()}/v1")
    async with http.get(celgate.root + "/healthz") as response:
        assert response.status == 200
