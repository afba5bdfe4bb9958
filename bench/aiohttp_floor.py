"""An experiment, not a proxy: aiohttp's floor as a relay, and the least a policy-enforcing relay adds on it.

Issue 12 asks for streams/s at c=8 at least aiohttp-ref's with the 20-rule
bench policy active, and for a policy layer of at most 20 µs a request. The
project mandates aiohttp for the server and the upstream side, so this
measures what is reachable at all on it (``bench/floor.py`` measures a raw
asyncio + httptools floor, without aiohttp):

* ``--mode relay``, aiohttp's floor: its low-level ``web.Server`` (no
  ``Application``, router or signals) and celgate's own lean upstream pool
  (``celgate.proxy.pool.ConnectionPool``). Each request's body is read and
  parsed as JSON (as ``aiohttp-ref`` does) and forwarded to the upstream's
  ``/chat/completions`` with the client's content type and authorization; a
  reply is relayed as one response, a stream read by read as it arrives.
* ``--mode governed --policies DIR``, the least a policy-enforcing relay
  must do on that floor: the principal resolved from the bearer key, a
  ``RequestInfo`` built from the body, the request decided (a deny is a
  403); a stream is split into SSE events, the events before the first one
  holding ``"tool_calls"`` written as they come, the ones from it on parsed
  strictly and held until the call is decided at its ``finish_reason``; a
  reply is checked as text and parsed strictly only if it may hold a call.

Neither has what a security proxy needs besides that (timeouts beyond the
pool's, limits, header checks, errors in OpenAI's shape, metrics, audit,
logs, the chat logic's strictness), so both are lower bounds, never a design
to ship as is.

It takes ``serve`` and celgate's flags and ignores what it does not use, so
the shared harness and ``bench/request_cost.py`` can start it as they start
celgate: ``python bench/request_cost.py --target aiohttp-floor`` (relay) or
``--target governed-floor`` (governed, with ``--policies``). In the harness,
a wrapper beside the venv's Python (aiohttp-ref runs on that Python) makes
``celgate-bare`` the relay floor and ``celgate`` the governed one::

    printf '#!/bin/sh\ncase " $* " in *" --policies "*) set -- "$@" --mode governed;; esac\nexec %s "$@"\n' \
        "$PWD/.venv/bin/python $PWD/bench/aiohttp_floor.py" > .venv/bin/celgate-floor
    chmod +x .venv/bin/celgate-floor
    CELGATE_BIN=$PWD/.venv/bin/celgate-floor REPEAT=2 ../shared/bench/run.sh aiohttp-ref celgate-bare celgate
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvloop
from aiohttp import __version__ as aiohttp_version
from aiohttp import web
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict

from celgate.policy import PolicySet, Principal, RequestInfo, ToolCall
from celgate.policy.loader import load_policies
from celgate.proxy.pool import ConnectionPool, Origin, PooledResponse
from celgate.proxy.sse import SSESplitter
from celgate.proxy.strict import check_text, first_mark, loads_strict, may_hold_calls, parse_event_strict

Handler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]

_SCALARS = (str, int, float, bool)
_CALL_KEYS = (b'"tool_calls"',)  # a chat chunk or completion carries its calls under this key
_DONE = "[DONE]"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_DENIED = b'{"error":{"message":"denied by policy","type":"permission_error","code":"policy_denied"}}'


class _Upstream:
    """One upstream base URL on celgate's lean pool (timeouts as celgate's defaults)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme or "http"
        port = parts.port or (443 if scheme == "https" else 80)
        self.origin = Origin(scheme, parts.hostname or "127.0.0.1", port)
        self.target = parts.path.rstrip("/") + "/chat/completions"
        self.pool = ConnectionPool(connect_timeout=10.0, first_byte_timeout=120.0, idle_timeout=120.0)

    async def send(self, request: BaseRequest, body: bytes) -> PooledResponse:
        headers: CIMultiDict[str] = CIMultiDict()
        for name in ("Content-Type", "Authorization"):
            value = request.headers.get(name)
            if value is not None:
                headers[name] = value
        return await self.pool.send("POST", self.origin, self.target, headers, body)

    def release(self, response: PooledResponse) -> None:
        self.pool.release(response, self.origin)


async def _reply(response: PooledResponse) -> web.Response:
    body = await response.content.read()
    return web.Response(body=body, status=response.status, headers={"Content-Type": response.content_type})


async def _start_stream(request: BaseRequest, response: PooledResponse) -> web.StreamResponse:
    out = web.StreamResponse(status=response.status, headers=_SSE_HEADERS)
    await out.prepare(request)
    return out


def relay_handler(upstream: _Upstream) -> Handler:
    """Mode ``relay``: forward, then relay the reply whole or the stream read by read."""

    async def handle(request: BaseRequest) -> web.StreamResponse:
        body = await request.read()
        stream = json.loads(body).get("stream") is True
        response = await upstream.send(request, body)
        try:
            if not stream:
                return await _reply(response)
            out = await _start_stream(request, response)
            content = response.content
            while chunk := await content.readany():
                await out.write(chunk)
            await out.write_eof()
            return out
        finally:
            upstream.release(response)

    return handle


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return key.strip() or None


def _tool_names(document: dict[str, Any]) -> tuple[str, ...]:
    """The offered tools' names: a function by its name, any other tool by its type."""
    names: list[str] = []
    for entry in document.get("tools") or ():
        kind = entry.get("type")
        nested = entry.get(kind) if isinstance(kind, str) else None
        names.append(nested.get("name", "") if isinstance(nested, dict) else str(kind))
    return tuple(names)


def _request_info(request: BaseRequest, document: dict[str, Any], headers_read: bool) -> RequestInfo:
    model = document.get("model")
    scalars = {k: v for k, v in document.items() if isinstance(v, _SCALARS) and k not in ("model", "stream", "user")}
    headers = {k.lower(): v for k, v in request.headers.items() if k.lower() != "authorization"} if headers_read else {}
    return RequestInfo(
        model=model if isinstance(model, str) else "",
        agent=None,
        stream=document.get("stream") is True,
        path=request.path,
        headers=headers,
        tools=_tool_names(document) if "tools" in document else (),
        scalars=scalars,
    )


class _Calls:
    """A stream's tool calls from the first event that may hold one: events held, fragments joined, decided once.

    Until that event, each read is scanned once for the call key (``first_mark``, which also finds ``\\u``
    escapes) and the whole events before it are written as they came, unsplit. From it on, every event is
    split out and read strictly.
    """

    __slots__ = ("active", "held", "parts", "policy", "principal", "request", "split", "splitter", "tail")

    def __init__(self, policy: PolicySet, principal: Principal, request: RequestInfo) -> None:
        self.policy = policy
        self.principal = principal
        self.request = request
        self.held: list[bytes] = []
        self.parts: dict[int, list[str]] = {}  # call index: [id, name, arguments]
        self.splitter = SSESplitter()
        self.active = False
        self.split = False  # CR line ends were seen: every event is split out and looked at
        self.tail = b""  # before the first mark: bytes of an event not yet whole

    def read(self, chunk: bytes) -> bytes:
        """One upstream read; the bytes to write now."""
        if self.active or self.split:
            return self._events(self.splitter.feed(chunk))
        buffer = self.tail + chunk if self.tail else chunk
        if buffer.find(b"\r") >= 0:  # CR line ends: no shortcut from here on (find: see strict.may_hold_calls)
            self.split, self.tail = True, b""
            return self._events(self.splitter.feed(buffer))
        mark = first_mark(buffer, _CALL_KEYS)
        cut = buffer.rfind(b"\n\n", 0, len(buffer) if mark < 0 else mark)
        cut = 0 if cut < 0 else cut + 2  # the end of the last whole event before the mark
        if mark < 0:
            self.tail = buffer[cut:]
            return buffer[:cut]
        self.active, self.tail = True, b""
        return buffer[:cut] + self._events(self.splitter.feed(buffer[cut:]))

    def end(self) -> bytes:
        """The upstream's stream ended: what is left, with any undecided call decided."""
        if not self.active and not self.split:
            tail, self.tail = self.tail, b""
            return tail
        return self._events(self.splitter.flush()) + b"".join(self.decide())

    def _events(self, events: list[bytes]) -> bytes:
        ready: list[bytes] = []
        for raw in events:
            if self.active or may_hold_calls(raw, _CALL_KEYS):
                self.active = True
                ready += self.feed(raw)
            else:
                ready.append(raw)
        return b"".join(ready)

    def feed(self, raw: bytes) -> list[bytes]:
        """Read one event strictly; return the events to write now (none while a call is undecided)."""
        data = parse_event_strict(raw).data
        if data == _DONE:
            return [*self.decide(), raw]
        if data is None:
            return self._hold(raw)
        finished = False
        for choice in loads_strict(data).get("choices") or ():
            for call in (choice.get("delta") or {}).get("tool_calls") or ():
                self._add(call)
            finished = finished or choice.get("finish_reason") is not None
        return [*self.decide(), raw] if finished else self._hold(raw)

    def _hold(self, raw: bytes) -> list[bytes]:
        self.held.append(raw)
        if self.parts:
            return []
        held, self.held = self.held, []
        return held

    def _add(self, call: dict[str, Any]) -> None:
        parts = self.parts.setdefault(call.get("index", 0), ["", "", ""])
        if "id" in call:
            parts[0] = call["id"]
        function = call.get("function") or {}
        parts[1] += function.get("name") or ""
        parts[2] += function.get("arguments") or ""

    def decide(self) -> list[bytes]:
        """Decide every pending call: the held events if all are allowed, else none (they are dropped)."""
        held, self.held = self.held, []
        calls, self.parts = self.parts, {}
        for call_id, name, arguments in calls.values():
            call = ToolCall(name=name, raw_arguments=arguments, id=call_id, source="upstream")
            if self.policy.check_tool_call(self.principal, self.request, call).blocked:
                return []
        return held


def governed_handler(upstream: _Upstream, policy: PolicySet) -> Handler:
    """Mode ``governed``: the relay, with the request decided and every tool call decided before it is sent."""

    async def handle(request: BaseRequest) -> web.StreamResponse:
        body = await request.read()
        document = json.loads(body)
        principal = policy.resolve_principal(_bearer(request.headers.get("Authorization")))
        model = document.get("model")
        headers_read = policy.reads_headers(principal, model if isinstance(model, str) else "", None)
        info = _request_info(request, document, headers_read)
        if policy.check_request(principal, info).blocked:
            return web.Response(body=_DENIED, status=403, content_type="application/json")
        response = await upstream.send(request, body)
        try:
            if not info.stream:
                return await _governed_reply(response, policy, principal, info)
            return await _governed_stream(request, response, _Calls(policy, principal, info))
        finally:
            upstream.release(response)

    return handle


async def _governed_reply(
    response: PooledResponse, policy: PolicySet, principal: Principal, info: RequestInfo
) -> web.Response:
    body = await response.content.read()
    check_text(body)
    if may_hold_calls(body, _CALL_KEYS):
        for choice in loads_strict(body).get("choices") or ():
            for call in (choice.get("message") or {}).get("tool_calls") or ():
                function = call.get("function") or {}
                tool = ToolCall(function.get("name", ""), function.get("arguments", ""), call.get("id", ""), "upstream")
                if policy.check_tool_call(principal, info, tool).blocked:
                    return web.Response(body=_DENIED, status=403, content_type="application/json")
    return web.Response(body=body, status=response.status, headers={"Content-Type": response.content_type})


async def _governed_stream(request: BaseRequest, response: PooledResponse, calls: _Calls) -> web.StreamResponse:
    out = await _start_stream(request, response)
    content = response.content
    while chunk := await content.readany():
        ready = calls.read(chunk)
        if ready:
            await out.write(ready)
    rest = calls.end()
    if rest:
        await out.write(rest)
    await out.write_eof()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="serve", choices=["serve"])
    parser.add_argument("--mode", choices=("relay", "governed"), default="relay")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--upstream", required="--version" not in (argv or sys.argv))
    parser.add_argument("--version", action="version", version=f"aiohttp floor experiment, aiohttp {aiohttp_version}")
    parser.add_argument("--policies", type=Path, help="policy folder (mode governed)")
    args, _ = parser.parse_known_args(argv if argv is not None else sys.argv[1:])
    upstream = _Upstream(args.upstream)
    if args.mode == "governed":
        if args.policies is None:
            parser.error("--mode governed needs --policies DIR")
        handler = governed_handler(upstream, load_policies(args.policies))
    else:
        handler = relay_handler(upstream)

    async def serve() -> None:
        server = web.Server(handler, access_log=None)
        listener = await asyncio.get_running_loop().create_server(server, args.host, args.port)
        await listener.serve_forever()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
