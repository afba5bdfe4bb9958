"""Hostile clients: slow heads and bodies, too many or too large headers, ambiguous or unreadable bodies.

Each gets a clear OpenAI-shaped 4xx (or a closed connection for a head that
never completes), never a 5xx, a hang or a crash.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from tests.helpers import Celgate, StartCelgate, assert_openai_error
from tests.helpers.fakeupstream import FakeUpstream

POLICY = """\
version: 1
defaults:
  decision: deny
rules:
  - name: small-models
    on: request
    models: ["small-*"]
    effect: allow
  - name: region-header
    on: request
    models: ["header-*"]
    when: request.headers["x-region"] == "eu"
    effect: allow
"""


async def connect(gate: Celgate) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = gate.root.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def test_a_request_head_that_never_completes_is_cut(upstream: FakeUpstream, start_celgate: StartCelgate) -> None:
    gate = await start_celgate(upstream=upstream.base_url, client_timeout=0.5)
    reader, writer = await connect(gate)
    started = time.monotonic()
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    for _ in range(10):  # a header byte every 0.2 s: each read is fresh, the head never ends
        await asyncio.sleep(0.2)
        if writer.is_closing() or reader.at_eof():
            break
        writer.write(b"X")
    data = await asyncio.wait_for(reader.read(), 5)
    assert time.monotonic() - started < 2.5 and b"200" not in data
    writer.close()


async def test_a_stalled_body_is_a_408(upstream: FakeUpstream, start_celgate: StartCelgate) -> None:
    gate = await start_celgate(upstream=upstream.base_url, client_timeout=0.5)
    reader, writer = await connect(gate)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"model"'
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 408")
    writer.close()
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([(f"x-h{i}", "v") for i in range(200)], 400),  # more than aiohttp's 128
        ([("x-big", "v" * 20000)], 400),  # a field over 8190 bytes
    ],
)
async def test_too_many_or_too_large_headers_are_a_400(
    celgate: Celgate, upstream: FakeUpstream, headers: list[tuple[str, str]], status: int
) -> None:
    reader, writer = await connect(celgate)
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers)
    writer.write(f"GET /v1/models HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.split(b" ")[1] == str(status).encode(), data[:80]
    assert b"application/json" in data.split(b"\r\n\r\n")[0]
    assert upstream.requests == []


async def post(
    http: aiohttp.ClientSession, url: str, data: bytes, content_type: str | None = "application/json", **headers: str
) -> tuple[int, dict]:  # type: ignore[type-arg]
    sent = {**headers, **({"Content-Type": content_type} if content_type else {})}
    async with http.post(url, data=data, headers=sent) as response:
        return response.status, await response.json(content_type=None)


async def test_a_repeated_key_is_a_400(gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession) -> None:
    """``"model"`` twice: policy would read one value, the upstream maybe the other."""
    for path in ("/chat/completions", "/embeddings", "/responses"):
        body = b'{"model": "small-1", "messages": [], "input": "x", "model": "big-1"}'
        status, error = await post(http, gate.url + path, body)
        assert status == 400 and assert_openai_error(error, code="duplicate_key"), path
    assert upstream.requests == []


async def test_a_tool_named_twice_over_is_a_400(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    """Chat's nested name and the Responses API's top-level one in one entry: a lenient upstream reads either."""
    tool = {"type": "function", "function": {"name": "lookup"}, "name": "shell.exec"}
    for path, extra in (("/chat/completions", {"messages": []}), ("/responses", {"input": "x"})):
        body = json.dumps({"model": "small-1", "tools": [tool], **extra}).encode()
        status, error = await post(http, gate.url + path, body)
        assert status == 400 and "names one tool at the top and another inside" in assert_openai_error(error)["message"]
    assert upstream.requests == []


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_json_bodies_are_read_whatever_the_content_type(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, content_type: str | None
) -> None:
    for path in ("/chat/completions", "/embeddings", "/responses"):
        body = json.dumps({"model": "big-1", "messages": [{"role": "user", "content": "x"}], "input": "x"}).encode()
        status, _ = await post(http, gate.url + path, body, content_type)
        assert status == 403, (path, content_type)
    assert upstream.requests == []


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 10000 + b"]" * 10000,
        b'{"model": "small-1", "messages": ' + b"[" * 10000 + b"]" * 10000 + b"}",
        b'{"model": "\\ud800", "messages": []}',
        b'{"model": "small-1", "messages": [], "user": "\\udfff"}',
        json.dumps({"model": "small-1", "messages": [], "metadata": {"k": "\ud800"}}).encode(),
        b"\xff\xfe{\x00}\x00",
        '{"model": "big-1", "input": "x"}'.encode("utf-16-le"),
    ],
)
async def test_unreadable_bodies_are_400s_never_500s(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, body: bytes
) -> None:
    for path in ("/chat/completions", "/embeddings", "/responses"):
        status, error = await post(http, gate.url + path, body)
        # a tool-free route reads an unreadable body as "no model" (refused by this policy); governed ones refuse it
        assert status == 400 or (path == "/embeddings" and status == 403), (path, error)
        assert_openai_error(error)
    assert upstream.requests == []


async def test_a_non_utf8_header_byte_a_rule_reads_is_a_400(gate: Celgate, upstream: FakeUpstream) -> None:
    reader, writer = await connect(gate)
    body = b'{"model": "header-1", "messages": []}'
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-region: e\xffu\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    status = int(data.split(b" ")[1])
    assert 400 <= status < 500, data[:200]
    assert upstream.requests == []
