"""A scripted OpenAI-compatible upstream for tests: real sockets, exact wire format.

Each test queues ``Script``s; every request to the fake pops the next one (or
gets the default echo completion). A script is a status, headers and either
a JSON body or a list of ``Step``s written as they come: SSE chunks with
delays, raw bytes, a stall, a connection reset, or garbage instead of HTTP.
Every request is recorded (method, path, headers, JSON body), and the fake
notices when the proxy closes a streaming connection early.

``POST .../responses`` gets a default Responses API answer (streamed when the
body asks). With a ``ResponsesStore`` (``FakeUpstream(store=...)``, shareable
between fakes) the fake also remembers the responses it returns, answers
``GET/DELETE /v1/responses/{id}`` and ``/input_items`` from them, and, like the
real API, refuses a ``previous_response_id`` it does not know and (with
``enforce_tool_outputs``) a continuation that leaves a tool call unanswered.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.helpers import responses_wire as rw

__all__ = [
    "FakeUpstream",
    "Recorded",
    "ResponsesStore",
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


def chat_chunk(
    delta: dict[str, Any], finish: str | None = None, *, usage: dict[str, int] | None = None
) -> dict[str, Any]:
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


_OUTPUT_CALL_TYPES = {output: call for call, output in rw.CALL_OUTPUT_TYPES.items()}
_RESPONSE_PATH = re.compile(r"/responses/(?P<id>[^/]+)(?P<items>/input_items)?$")


def _answered_call_id(item: Mapping[str, Any]) -> Any:
    """The call an output item answers: ``call_id``, or ``id`` for a ``local_shell_call_output`` (keyed so)."""
    return item.get("call_id") or (item.get("id") if item.get("type") == "local_shell_call_output" else None)


class ResponsesStore:
    """The responses one or more fakes returned, by id, with their input items: the API's server-side state.

    Share one between ``FakeUpstream``s to stand for one upstream behind several
    proxies. ``check`` applies the real API's continuation rules to a request.
    """

    def __init__(self) -> None:
        self.responses: dict[str, dict[str, Any]] = {}
        self.inputs: dict[str, list[dict[str, Any]]] = {}
        self.items: dict[str, dict[str, Any]] = {}  # every stored item by id, for ``item_reference`` inputs

    def put(self, response: Mapping[str, Any], inputs: list[dict[str, Any]]) -> None:
        """Store (or update, as a stream progresses) ``response`` and the input items of its request."""
        stored = json.loads(json.dumps(response))
        self.responses[stored["id"]] = stored
        self.inputs.setdefault(stored["id"], inputs)
        for item in [*inputs, *stored.get("output", [])]:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                self.items[item["id"]] = item

    def get(self, response_id: str) -> dict[str, Any] | None:
        return self.responses.get(response_id)

    def delete(self, response_id: str) -> bool:
        self.inputs.pop(response_id, None)
        return self.responses.pop(response_id, None) is not None

    def chain(self, response_id: str | None) -> list[dict[str, Any]]:
        """The stored responses a ``previous_response_id`` continues, newest first."""
        found: list[dict[str, Any]] = []
        while isinstance(response_id, str) and response_id in self.responses and len(found) < 1000:
            found.append(self.responses[response_id])
            response_id = found[-1].get("previous_response_id")
        return found

    def check(self, body: Any, *, enforce_tool_outputs: bool = False) -> dict[str, Any] | None:
        """The OpenAI error body the real API answers ``POST /v1/responses`` with ``body`` (HTTP 400), or ``None``.

        An unknown ``previous_response_id`` is refused. With ``enforce_tool_outputs``,
        every client-executed call of the previous response (and any call item in
        the input) needs its ``*_output`` item in the input, and every output item
        must answer a call in the input or the conversation.
        """
        if not isinstance(body, Mapping):
            return None
        previous_id = body.get("previous_response_id")
        chain = self.chain(previous_id)
        if isinstance(previous_id, str) and not chain:
            return rw.openai_error(
                f"Previous response with id '{previous_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        if not enforce_tool_outputs:
            return None
        items = rw.input_items(body, self.items)
        calls = [i for i in (chain[0]["output"] if chain else []) if i.get("type") in rw.CALL_OUTPUT_TYPES]
        calls += [i for i in items if i.get("type") in rw.CALL_OUTPUT_TYPES]
        answered = {(i["type"], _answered_call_id(i)) for i in items if i.get("type") in _OUTPUT_CALL_TYPES}
        for call in calls:
            if (rw.CALL_OUTPUT_TYPES[call["type"]], call.get("call_id")) not in answered:
                word = rw.CALL_WORDS[call["type"]]
                return rw.openai_error(f"No tool output found for {word} {call.get('call_id')}.", param="input")
        known = {(i.get("type"), i.get("call_id")) for i in items}
        for response in chain:
            seen = [*response.get("output", []), *self.inputs.get(response["id"], [])]
            known |= {(i.get("type"), i.get("call_id")) for i in seen}
        for item in items:
            call_type = _OUTPUT_CALL_TYPES.get(item.get("type", ""))
            if call_type is not None and (call_type, _answered_call_id(item)) not in known:
                word, call_id = rw.CALL_WORDS[call_type], _answered_call_id(item)
                message = f"No tool call found for {word} output with call_id {call_id}."
                return rw.openai_error(message, param="input")
        return None


class _ResponseWatcher:
    """Reads the SSE a fake writes and stores each response snapshot it carries, so the store tracks the stream."""

    def __init__(self, store: ResponsesStore, inputs: list[dict[str, Any]]) -> None:
        self.store, self.inputs, self.buffer = store, inputs, b""

    def feed(self, data: bytes) -> None:
        self.buffer += data.replace(b"\r\n", b"\n")
        *frames, self.buffer = self.buffer.split(b"\n\n")
        for sse in rw.parse_sse(b"\n\n".join(frames) + b"\n\n" if frames else b""):
            try:
                event = json.loads(sse.data)
            except ValueError:
                continue
            response = event.get("response") if isinstance(event, dict) else None
            if not isinstance(response, dict) or not isinstance(response.get("id"), str):
                continue
            if response.get("store") is not False:
                self.store.put(response, self.inputs)


class FakeUpstream:
    def __init__(self, *, store: ResponsesStore | bool = False, enforce_tool_outputs: bool = False) -> None:
        """``store=True`` (or ``enforce_tool_outputs``) gives this fake a ``ResponsesStore``; or pass a shared one."""
        self.scripts: deque[Script] = deque()
        self.requests: list[Recorded] = []
        self.closed_early = asyncio.Event()  # the proxy closed a stream before the script ended
        self.step_times: list[float] = []  # perf_counter() when each step's bytes were written
        self.first_body_chunk = asyncio.Event()  # a request body started arriving (uploads are streamed)
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        if store is True or (store is False and enforce_tool_outputs):
            store = ResponsesStore()
        self.store: ResponsesStore | None = store if isinstance(store, ResponsesStore) else None
        self.enforce_tool_outputs = enforce_tool_outputs

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
        self.requests.append(
            Recorded(request.method, request.path_qs, dict(request.headers), body, raw, request.raw_path)
        )
        on_data: Callable[[bytes], None] | None = None
        if self.store is not None:
            answer = self._store_answer(request, body)
            if answer is not None:
                return answer
            on_data = self._store_watcher(request, body)
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
            is_response = isinstance(script.json, dict) and script.json.get("object") == "response"
            if on_data is not None and script.status == 200 and is_response:
                on_data(rw.frame({"type": "response.completed", "response": script.json}))
            return web.json_response(script.json, status=script.status, headers=script.headers)
        return await self._play(request, script, on_data if script.status == 200 else None)

    async def _play(
        self, request: web.Request, script: Script, on_data: Callable[[bytes], None] | None = None
    ) -> web.StreamResponse:
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
                    if on_data is not None:
                        on_data(step.data)
        except (asyncio.CancelledError, ConnectionResetError):
            self.closed_early.set()
            raise
        await response.write_eof()
        return response

    def _store_answer(self, request: web.Request, body: Any) -> web.Response | None:
        """What the store answers itself (lookups, refused continuations); ``None`` leaves it to a script or default."""
        assert self.store is not None
        match = _RESPONSE_PATH.search(request.path)
        if match and request.method in ("GET", "DELETE"):
            response_id = match["id"]
            stored = self.store.get(response_id)
            if stored is None:
                error = rw.openai_error(f"Response with id '{response_id}' not found.")
                return web.json_response(error, status=404)
            if request.method == "DELETE":
                self.store.delete(response_id)
                return web.json_response({"id": response_id, "object": "response", "deleted": True})
            if match["items"]:
                return web.json_response(_item_list(self.store.inputs.get(response_id, []), request.query))
            return web.json_response(stored)
        if request.method == "POST" and request.path.endswith("/responses"):
            refusal = self.store.check(body, enforce_tool_outputs=self.enforce_tool_outputs)
            if refusal is not None:
                return web.json_response(refusal, status=400)
        return None

    def _store_watcher(self, request: web.Request, body: Any) -> Callable[[bytes], None] | None:
        """For ``POST .../responses`` that may be stored: a sink for the body written, storing each snapshot."""
        assert self.store is not None
        if request.method != "POST" or not request.path.endswith("/responses"):
            return None
        if isinstance(body, dict) and body.get("store") is False:
            return None
        return _ResponseWatcher(self.store, rw.input_items(body, self.store.items)).feed

    def _default(self, request: web.Request, body: Any) -> Script:
        if request.path.endswith("/models"):
            return Script(
                json={
                    "object": "list",
                    "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}],
                }
            )
        if request.method == "POST" and request.path.endswith("/responses"):
            fields = rw.request_fields(body)
            output = [rw.message_item("Hello world")]
            if isinstance(body, dict) and body.get("stream"):
                return Script(steps=rw.responses_steps(output, **fields))
            return Script(json=rw.response_object(output, **fields))
        if isinstance(body, dict) and body.get("stream"):
            return Script(steps=text_stream(["Hello", " world"]))
        return Script(json=completion("Hello world"))


def _item_list(items: list[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """A page of input items as ``GET /v1/responses/{id}/input_items`` lists them (``order`` desc by default)."""
    ordered = list(reversed(items)) if query.get("order", "desc") == "desc" else list(items)
    ids = [i.get("id") for i in ordered]
    if query.get("after") in ids:
        ordered = ordered[ids.index(query["after"]) + 1 :]
    limit = int(query.get("limit", "20"))
    page = ordered[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": len(ordered) > limit,
    }


def _abort_with_rst(transport: asyncio.BaseTransport) -> None:
    """Close with SO_LINGER 0, so the peer sees a TCP RST rather than an orderly FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
