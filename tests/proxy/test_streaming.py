"""Chat completions through celgate: the real openai client, byte-level forwarding, real streaming, disconnects."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
from openai.lib.streaming.chat import ChatCompletionStreamState

from celgate.proxy.keys import METRICS
from tests.helpers import Celgate, OpenAIFactory
from tests.helpers.fakeupstream import (
    USAGE,
    FakeUpstream,
    Script,
    Step,
    chat_chunk,
    completion,
    sse,
    text_stream,
    tool_call_stream,
)
from tests.helpers.observe import metric, parse_samples

MESSAGES = [{"role": "user", "content": "Hi"}]
TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}
    for name in ("get_weather", "get_time", "search")
]
PARALLEL_CALLS = [
    ("call_1", "get_weather", '{"location": "Paris", "unit": "celsius"}'),
    ("call_2", "get_time", '{"timezone": "Europe/Paris"}'),
    ("call_3", "search", '{"query": "caf\\u00e9 near \\"Louvre\\"", "limit": 5}'),
]
PROMPT = {"model": "fake-model", "messages": MESSAGES}


async def read_until(response: aiohttp.ClientResponse, marker: bytes, received: bytearray) -> None:
    """Read the body into ``received`` until it contains ``marker``."""
    while marker not in received:
        data = await response.content.readany()
        assert data, f"body ended before {marker!r}; got {bytes(received)!r}"
        received += data


async def stream_post(http: aiohttp.ClientSession, celgate: Celgate, body: dict[str, Any]) -> aiohttp.ClientResponse:
    return await http.post(celgate.url + "/chat/completions", json=body, headers={"Authorization": "Bearer sk-raw"})


# ------------------------------------------------------------------------------ the openai client


async def test_non_stream_completion(celgate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory) -> None:
    client = oai(celgate.url)
    result = await client.chat.completions.create(model="fake-model", messages=MESSAGES, temperature=0.2)
    assert result.choices[0].message.content == "Hello world"
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None and result.usage.total_tokens == USAGE["total_tokens"]
    [recorded] = upstream.requests
    assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
    assert recorded.body == {"model": "fake-model", "messages": MESSAGES, "temperature": 0.2}


async def test_non_stream_tool_calls(celgate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory) -> None:
    upstream.push(Script(json=completion(None, tool_calls=PARALLEL_CALLS)))
    result = await oai(celgate.url).chat.completions.create(model="fake-model", messages=MESSAGES, tools=TOOLS)
    calls = result.choices[0].message.tool_calls or []
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == PARALLEL_CALLS
    assert result.choices[0].finish_reason == "tool_calls"


async def test_stream_with_usage_and_done(celgate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory) -> None:
    upstream.push(Script(steps=text_stream(["Hello", ",", " world", "!"])))
    stream = await oai(celgate.url).chat.completions.create(
        model="fake-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello, world!"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() == {**USAGE, "completion_tokens_details": None, "prompt_tokens_details": None}
    assert upstream.requests[0].body["stream"] is True
    assert upstream.requests[0].body["stream_options"] == {"include_usage": True}


async def test_stream_parallel_tool_calls_reassembled_by_the_client(
    celgate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    upstream.push(Script(steps=tool_call_stream(PARALLEL_CALLS, pieces=4)))
    stream = await oai(celgate.url).chat.completions.create(
        model="fake-model", messages=MESSAGES, tools=TOOLS, stream=True, stream_options={"include_usage": True}
    )
    state = ChatCompletionStreamState()
    manual: dict[int, dict[str, str]] = {}
    async for chunk in stream:
        state.handle_chunk(chunk)
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = manual.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                call["name"] += (delta.function and delta.function.name) or ""
                call["arguments"] += (delta.function and delta.function.arguments) or ""
    final = state.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == PARALLEL_CALLS
    assert final.choices[0].finish_reason == "tool_calls"
    assert [(c["id"], c["name"], c["arguments"]) for c in manual.values()] == PARALLEL_CALLS
    assert json.loads(calls[2].function.arguments) == {"query": 'café near "Louvre"', "limit": 5}
    assert final.usage is not None and final.usage.total_tokens == USAGE["total_tokens"]


async def test_unknown_fields_pass_untouched(
    celgate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, http: aiohttp.ClientSession
) -> None:
    first = chat_chunk({"role": "assistant", "content": "", "x_delta_extra": [1, {"a": None}]})
    first["x_vendor"] = {"trace": "abc", "nested": {"k": 1.5}}
    first["choices"][0]["x_choice_extra"] = True
    steps = [
        Step(sse(first)),
        Step(sse(chat_chunk({"content": "ok"}))),
        Step(sse(chat_chunk({}, "stop"))),
        Step(b"data: [DONE]\n\n"),
    ]
    upstream.push(Script(steps=steps), Script(steps=steps))
    stream = await oai(celgate.url).chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]
    dumped = chunks[0].model_dump()
    assert dumped["x_vendor"] == first["x_vendor"]
    assert dumped["choices"][0]["x_choice_extra"] is True
    assert dumped["choices"][0]["delta"]["x_delta_extra"] == [1, {"a": None}]
    async with await stream_post(http, celgate, {**PROMPT, "stream": True}) as response:
        assert await response.read() == b"".join(s.data for s in steps)


# ------------------------------------------------------------------------------- bytes on the wire


async def test_stream_bytes_are_forwarded_identically(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    """Odd but valid framing (comments, CRLF, CR, event names, ids, multi-line data) arrives exactly as sent."""
    steps = [
        *text_stream(["Hello", " world"], done=False)[:2],
        Step(b": keep-alive\n\n"),
        Step(
            b'data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1,"model":"m",'
            b'"choices":[{"index":0,"delta":{"content":" crlf"},"finish_reason":null}]}\r\n\r\n'
        ),
        Step(
            b'id: 42\nretry: 1000\ndata: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m",\n'
            b'data: "choices":[]}\n\n'
        ),
        Step(b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[]}\r\r'),
        Step(b'data: {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",'),  # split
        Step(b' "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'),
        Step(sse(chat_chunk({}, usage=USAGE))),
        Step(b"data: [DONE]\n\n"),
    ]
    upstream.push(Script(steps=steps, headers={"X-Upstream-Trace": "t-1", "openai-processing-ms": "12"}))
    async with await stream_post(http, celgate, {**PROMPT, "stream": True}) as response:
        body = await response.read()
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["X-Upstream-Trace"] == "t-1"
        assert response.headers["openai-processing-ms"] == "12"
    assert body == b"".join(step.data for step in steps)


async def test_stream_with_allowed_tool_calls_is_byte_identical(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    steps = tool_call_stream(PARALLEL_CALLS, pieces=3)
    upstream.push(Script(steps=steps))
    async with await stream_post(http, celgate, {**PROMPT, "stream": True, "tools": TOOLS}) as response:
        assert await response.read() == b"".join(step.data for step in steps)


async def test_request_body_is_forwarded_byte_identical(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    raw = (
        b'{ "model" : "fake-model",\n  "messages": [{"role": "user", "content": "caf\\u00e9 \xc3\xa9"}],\n'
        b'  "x_extra": {"keep": [1, 2.50]} }'
    )
    async with http.post(
        celgate.url + "/chat/completions", data=raw, headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 200
    assert upstream.requests[0].raw == raw


async def test_a_stream_without_done_gets_none_added(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    steps = text_stream(["no", " done"], done=False)
    upstream.push(Script(steps=steps))
    async with await stream_post(http, celgate, {**PROMPT, "stream": True}) as response:
        body = await response.read()
    assert body == b"".join(step.data for step in steps)
    assert b"[DONE]" not in body and b"event: error" not in body


async def test_a_stream_ending_inside_an_event_ends_with_an_error_event(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    steps = [*text_stream(["cut"], usage=False, done=False)[:2], Step(b'data: {"id": "chatcmpl-fake", "choi')]
    upstream.push(Script(steps=steps))
    async with await stream_post(http, celgate, {**PROMPT, "stream": True}) as response:
        body = await response.read()
    complete = b"".join(step.data for step in steps[:2])
    assert body.startswith(complete)
    error = body[len(complete) :]
    assert error.startswith(b"event: error\ndata: ") and error.endswith(b"\n\n")
    assert json.loads(error.split(b"data: ", 1)[1])["error"]["code"] == "upstream_reset"
    assert b"[DONE]" not in body


async def test_a_final_event_ended_by_carriage_returns_is_not_lost(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    steps = [Step(sse(chat_chunk({"content": "cr"})).replace(b"\n", b"\r")), Step(b"data: [DONE]\r\r")]
    upstream.push(Script(steps=steps))
    async with await stream_post(http, celgate, {**PROMPT, "stream": True}) as response:
        assert await response.read() == b"".join(step.data for step in steps)


# --------------------------------------------------------------------------------- real streaming


async def test_first_chunk_arrives_while_the_upstream_holds_the_second(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()
    steps = text_stream(["first", "second"])
    steps[2].wait = release  # "second" waits for the test
    upstream.push(Script(steps=steps))
    async with await stream_post(http, celgate, {**PROMPT, "stream": True}) as response:
        received = bytearray()
        await read_until(response, b'"first"', received)
        assert not release.is_set()
        assert len(upstream.step_times) == 2  # the upstream has written role + "first" and holds the rest
        assert b'"second"' not in received
        release.set()
        received += await response.read()
    assert bytes(received) == b"".join(step.data for step in steps)


async def test_openai_client_sees_each_chunk_before_the_next_is_sent(
    celgate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    words = ["one", " two", " three"]
    gates = [asyncio.Event() for _ in words]
    steps = text_stream(words)
    for index, gate in enumerate(gates):
        steps[1 + index].wait = gate
    upstream.push(Script(steps=steps))
    stream = await oai(celgate.url).chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    seen: list[str] = []
    gates[0].set()
    async for chunk in stream:
        content = chunk.choices[0].delta.content if chunk.choices else None
        if content:
            seen.append(content)
            assert not any(gate.is_set() for gate in gates[len(seen) :])  # nothing later was released yet
            if len(seen) < len(gates):
                gates[len(seen)].set()
    assert seen == words


async def test_tool_call_deltas_stream_through_without_waiting_for_the_end(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()
    steps = tool_call_stream(PARALLEL_CALLS[:1], pieces=2)
    steps[3].wait = release  # the second argument piece is held upstream
    upstream.push(Script(steps=steps))
    async with await stream_post(http, celgate, {**PROMPT, "stream": True, "tools": TOOLS}) as response:
        received = bytearray()
        await read_until(response, steps[2].data, received)  # head + first argument piece already here
        assert not release.is_set()
        release.set()
        received += await response.read()
    assert bytes(received) == b"".join(step.data for step in steps)


async def test_many_concurrent_streams(celgate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory) -> None:
    client = oai(celgate.url)

    async def one(i: int) -> str:
        stream = await client.chat.completions.create(model=f"m{i}", messages=MESSAGES, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert await asyncio.gather(*(one(i) for i in range(30))) == ["Hello world"] * 30
    assert sorted(r.body["model"] for r in upstream.requests) == sorted(f"m{i}" for i in range(30))
    assert _active_streams(celgate) == 0


# ---------------------------------------------------------------------------------- disconnects


async def test_client_disconnect_mid_stream_closes_the_upstream(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    never = asyncio.Event()
    steps = text_stream(["first", "never sent"])
    steps[2].wait = never
    upstream.push(Script(steps=steps))
    response = await stream_post(http, celgate, {**PROMPT, "stream": True})
    received = bytearray()
    await read_until(response, b'"first"', received)
    response.close()  # the client goes away mid-stream
    await asyncio.wait_for(upstream.closed_early.wait(), timeout=5)
    await _until(lambda: _active_streams(celgate) == 0)
    server = upstream._runner.server if upstream._runner else None
    assert server is not None
    await _until(lambda: not server.connections)  # no upstream connection left behind
    async with await stream_post(http, celgate, {**PROMPT, "stream": True}) as again:  # and celgate carries on
        assert b"[DONE]" in await again.read()


async def test_slow_reading_client_that_leaves_closes_the_upstream(celgate: Celgate, upstream: FakeUpstream) -> None:
    """The proxy is blocked writing to a client that barely reads; when it leaves, the upstream is closed."""
    never = asyncio.Event()
    big = "x" * 16384
    steps = [Step(sse(chat_chunk({"content": big}))) for _ in range(2000)] + [Step(b"data: [DONE]\n\n", wait=never)]
    upstream.push(Script(steps=steps))
    port = int(celgate.root.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    body = json.dumps({**PROMPT, "stream": True}).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: celgate\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    for _ in range(5):  # a slow reader: a little at a time
        assert await reader.read(1024)
        await asyncio.sleep(0.02)
    assert not upstream.closed_early.is_set()
    writer.close()
    await asyncio.wait_for(upstream.closed_early.wait(), timeout=5)
    assert len(upstream.step_times) < len(steps) - 1  # backpressure reached the upstream
    await _until(lambda: _active_streams(celgate) == 0)


async def test_client_disconnect_before_upstream_headers_closes_the_upstream(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.push(Script(steps=text_stream(["late"]), delay=30))
    task = asyncio.create_task(stream_post(http, celgate, {**PROMPT, "stream": True}))
    await _until(lambda: len(upstream.requests) == 1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # celgate drops its upstream connection (the fake was still sleeping before its headers)
    server = upstream._runner.server if upstream._runner else None
    assert server is not None
    await _until(lambda: not server.connections)


def _active_streams(celgate: Celgate) -> float:
    return metric(parse_samples(celgate.app[METRICS].exposition().decode()), "celgate_active_streams")


async def _until(condition: Callable[[], bool], timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)
