"""Bounded upstream replies: one SSE event and one whole body celgate reads are capped.

A hostile or broken upstream (one endless event, a gigabyte JSON body) must
not grow celgate's memory. Past ``--max-upstream-event-bytes`` a stream ends
with an SSE ``error`` event and no ``[DONE]``; past
``--max-upstream-body-bytes`` a reply celgate reads whole is a 502. Either
way the connection is closed, never pooled: the next request opens a new
one. The upstream is a raw keep-alive socket server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import Celgate, StartCelgate, assert_openai_error, write_policy
from tests.helpers.rawupstream import RawRequest, RawUpstream, json_response

EVENT_LIMIT, BODY_LIMIT = 4096, 8192
BIG = "x" * (2 * BODY_LIMIT)


def chunked(*pieces: bytes) -> list[bytes]:
    """A chunked SSE response written piece by piece; the last piece does not end the body."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    return [head, *(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)]


def chat_chunk(content: str) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}  # fmt: skip
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def small_then_big_event(request: RawRequest) -> list[bytes]:
    return chunked(chat_chunk("hi"), chat_chunk(BIG), b"data: [DONE]\n\n")


def endless_event(request: RawRequest) -> list[bytes]:
    """An event that never ends, on a connection the upstream keeps open."""
    return chunked(chat_chunk("hi"), *[b"data: " + b"y" * 1000 for _ in range(8)])


def responses_big_event(request: RawRequest) -> list[bytes]:
    created = {"type": "response.created", "sequence_number": 0, "response": {"id": "r", "output": []}}
    delta = {"type": "response.output_text.delta", "sequence_number": 1, "delta": BIG, "output_index": 0}
    named = (b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode()) for e in (created, delta))
    return chunked(*named)


def big_json(request: RawRequest) -> bytes:
    return json_response({"object": "list", "data": [], "pad": BIG})


def big_chunked_json(request: RawRequest) -> list[bytes]:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = json.dumps({"object": "list", "data": [], "pad": BIG}).encode()
    return [head, *(b"%x\r\n%s\r\n" % (len(body[i : i + 1000]), body[i : i + 1000]) for i in range(0, len(body), 1000))]


@pytest.fixture
async def gate(raw_upstream: RawUpstream, start_celgate: StartCelgate, tmp_path: Path) -> Celgate:
    policies = write_policy(tmp_path, "version: 1\ndefaults: {decision: allow}\n")
    return await start_celgate(
        upstream=raw_upstream.base_url, no_policy=False, policies=policies,
        max_upstream_event_bytes=EVENT_LIMIT, max_upstream_body_bytes=BODY_LIMIT,
    )  # fmt: skip


async def call(http: aiohttp.ClientSession, gate: Celgate, method: str, path: str, body: object) -> tuple[int, bytes]:
    async with http.request(method, gate.root + path, json=body) as response:
        return response.status, await response.read()


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("path", "body", "responder"),
    [
        ("/v1/chat/completions", {**CHAT, "stream": True}, small_then_big_event),
        ("/v1/chat/completions", {**CHAT, "stream": True}, endless_event),
        ("/v1/responses", {"model": "m", "input": "hi", "stream": True}, responses_big_event),
    ],
    ids=["chat-event", "chat-endless-event", "responses-event"],
)
async def test_an_event_over_the_limit_ends_the_stream_and_closes_the_connection(
    path: str, body: object, responder: Callable[[RawRequest], list[bytes]],
    raw_upstream: RawUpstream, gate: Celgate, http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    raw_upstream.responder = responder
    status, data = await call(http, gate, "POST", path, body)
    assert status == 200
    events = [e for e in data.decode().split("\n\n") if e]
    assert events[-1].startswith("event: error") and b"[DONE]" not in data
    error = json.loads(events[-1].partition("data: ")[2])
    assert_openai_error(error, type_="upstream_error", code="upstream_too_large")
    assert BIG not in data.decode()
    await assert_next_request_opens_a_new_connection(raw_upstream, gate, http)


@pytest.mark.parametrize(
    ("method", "path", "body", "responder"),
    [
        ("POST", "/v1/chat/completions", CHAT, big_json),
        ("POST", "/v1/chat/completions", CHAT, big_chunked_json),
        ("POST", "/v1/responses", {"model": "m", "input": "hi"}, big_chunked_json),
        ("GET", "/v1/models", None, big_json),
        ("GET", "/v1/responses/resp_1", None, big_chunked_json),
    ],
    ids=["chat-length", "chat-chunked", "responses", "models", "stored-response"],
)
async def test_a_body_over_the_limit_is_a_502_and_closes_the_connection(
    method: str, path: str, body: object, responder: Callable[[RawRequest], bytes | list[bytes]],
    raw_upstream: RawUpstream, gate: Celgate, http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    raw_upstream.responder = responder
    status, data = await call(http, gate, method, path, body)
    assert status == 502
    assert_openai_error(json.loads(data), type_="upstream_error", code="upstream_too_large")
    await assert_next_request_opens_a_new_connection(raw_upstream, gate, http)


async def assert_next_request_opens_a_new_connection(
    raw_upstream: RawUpstream, gate: Celgate, http: aiohttp.ClientSession
) -> None:
    raw_upstream.responder = lambda request: json_response({"object": "list", "data": []})
    assert (await call(http, gate, "GET", "/v1/models", None))[0] == 200
    assert [len(connection) for connection in raw_upstream.connections] == [1, 1]


async def test_replies_within_the_limits_pass_and_keep_the_connection(
    raw_upstream: RawUpstream, gate: Celgate, http: aiohttp.ClientSession
) -> None:
    raw_upstream.responder = lambda request: chunked(chat_chunk("a" * (EVENT_LIMIT - 200)), b"data: [DONE]\n\n", b"")
    status, data = await call(http, gate, "POST", "/v1/chat/completions", {**CHAT, "stream": True})
    assert status == 200 and data.endswith(b"data: [DONE]\n\n")
    raw_upstream.responder = lambda request: json_response(
        {"object": "list", "data": [], "pad": "p" * (BODY_LIMIT - 200)}
    )
    assert (await call(http, gate, "GET", "/v1/models", None))[0] == 200
    assert [len(connection) for connection in raw_upstream.connections] == [2]
