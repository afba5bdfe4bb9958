"""A scripted OpenAI-compatible upstream for tests: real sockets, exact wire format.

Each test queues ``Script``s; every request to the fake pops the next one (or
gets the default echo completion). A script is a status, headers and either
a JSON body or a list of ``Step``s written as they come: SSE chunks with
delays, raw bytes, a stall, a connection reset, or garbage instead of HTTP.
Every request is recorded (method, path, headers, JSON body), and the fake
notices when the proxy closes a streaming connection early.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = [
    "FakeUpstream",
    "Recorded",
    "Script",
    "Step",
    "chat_chunk",
    "completion",
    "sse",
    "text_stream",
    "tool_call_stream",
]


@dataclass
class Step:
    """One thing the fake does while answering: write bytes, wait, or break the connection."""

    data: bytes = b""
    delay: float = 0.0  # seconds to wait before this step
    reset: bool = False  # abort the TCP connection instead of writing
    stall: float = 0.0  # wait this long without writing (a stalled upstream)
    wait: asyncio.Event | None = None  # hold this step until the test sets the event


@dataclass
class Script:
    status: int = 200
    json: Any = None
    steps: list[Step] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    garbage: bytes | None = None  # write these raw bytes instead of an HTTP response, then close
    delay: float = 0.0  # before the response headers (first-byte latency)
    reset: bool = False  # send a TCP RST instead of any response (reset before headers)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes = b""  # the request body exactly as received
    raw_path: str = ""  # the request target exactly as received (path and query, still %-encoded)


def sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def chat_chunk(delta: dict[str, Any], finish: str | None = None, *, usage: dict[str, int] | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "fake-model",
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not None:
        chunk["choices"] = []
        chunk["usage"] = usage
    return chunk


USAGE = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}


def text_stream(words: list[str], delay: float = 0.0, usage: bool = True, done: bool = True) -> list[Step]:
    steps = [Step(sse(chat_chunk({"role": "assistant", "content": "", "refusal": None})))]
    steps += [Step(sse(chat_chunk({"content": w})), delay=delay) for w in words]
    steps.append(Step(sse(chat_chunk({}, "stop"))))
    if usage:
        steps.append(Step(sse(chat_chunk({}, usage=USAGE))))
    if done:
        steps.append(Step(b"data: [DONE]\n\n"))
    return steps


def tool_call_stream(calls: list[tuple[str, str, str]], pieces: int = 3, delay: float = 0.0) -> list[Step]:
    """Tool calls ``(id, name, arguments)`` as OpenAI streams them: arguments split across chunks."""
    steps = [Step(sse(chat_chunk({"role": "assistant", "content": None, "refusal": None})))]
    for index, (call_id, name, arguments) in enumerate(calls):
        head = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        steps.append(Step(sse(chat_chunk({"tool_calls": [head]})), delay=delay))
        size = max(1, -(-len(arguments) // pieces))
        for start in range(0, len(arguments), size):
            part = {"index": index, "function": {"arguments": arguments[start : start + size]}}
            steps.append(Step(sse(chat_chunk({"tool_calls": [part]})), delay=delay))
    steps.append(Step(sse(chat_chunk({}, "tool_calls"))))
    steps.append(Step(sse(chat_chunk({}, usage=USAGE))))
    steps.append(Step(b"data: [DONE]\n\n"))
    return steps


def completion(content: str | None = "hello", tool_calls: list[tuple[str, str, str]] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in tool_calls
        ]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "fake-model",
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls" if tool_calls else "stop"}
        ],
        "usage": USAGE,
    }


class FakeUpstream:
    def __init__(self) -> None:
        self.scripts: deque[Script] = deque()
        self.requests: list[Recorded] = []
        self.closed_early = asyncio.Event()  # the proxy closed a stream before the script ended
        self.step_times: list[float] = []  # perf_counter() when each step's bytes were written
        self.first_body_chunk = asyncio.Event()  # a request body started arriving (uploads are streamed)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def push(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = bytearray()
        async for chunk in request.content.iter_any():
            received += chunk
            self.first_body_chunk.set()
        raw = bytes(received)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        self.requests.append(Recorded(request.method, request.path_qs, dict(request.headers), body, raw, request.raw_path))
        script = self.scripts.popleft() if self.scripts else self._default(request, body)
        if script.delay:
            await asyncio.sleep(script.delay)
        if script.reset:
            assert request.transport is not None
            _abort_with_rst(request.transport)
            return web.Response()  # never sent: the connection is gone
        if script.garbage is not None:
            assert request.transport is not None
            request.transport.write(script.garbage)
            request.transport.close()
            return web.Response()  # never sent: the transport is closed
        if script.steps is None:
            return web.json_response(script.json, status=script.status, headers=script.headers)
        return await self._play(request, script)

    async def _play(self, request: web.Request, script: Script) -> web.StreamResponse:
        headers = {"Content-Type": "text/event-stream", **script.headers}
        response = web.StreamResponse(status=script.status, headers=headers)
        await response.prepare(request)
        try:
            for step in script.steps or ():
                if step.delay:
                    await asyncio.sleep(step.delay)
                if step.stall:
                    await asyncio.sleep(step.stall)
                if step.wait is not None:
                    await step.wait.wait()
                if step.reset:
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                if step.data:
                    await response.write(step.data)
                    self.step_times.append(time.perf_counter())
        except (asyncio.CancelledError, ConnectionResetError):
            self.closed_early.set()
            raise
        await response.write_eof()
        return response

    def _default(self, request: web.Request, body: Any) -> Script:
        if request.path.endswith("/models"):
            return Script(json={"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]})
        if isinstance(body, dict) and body.get("stream"):
            return Script(steps=text_stream(["Hello", " world"]))
        return Script(json=completion("Hello world"))


def _abort_with_rst(transport: asyncio.BaseTransport) -> None:
    """Close with SO_LINGER 0, so the peer sees a TCP RST rather than an orderly FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
