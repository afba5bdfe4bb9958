"""Relaying the upstream's reply on a governed route: every tool call meets policy before the client sees it.

What the reply is follows from the request, as it does for clients: a
client that asked for a stream parses the body as SSE whatever its
``Content-Type`` or 2xx status says, one that did not parses it as JSON. So
a 2xx reply is intercepted as a stream or filtered as JSON by the request's
``stream`` flag, never by the upstream's labels; a redirect is a fault (the
client would fetch the answer from elsewhere, past celgate); an error status
passes as sent (clients raise on it), with secrets it quotes redacted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from .errors import PolicyDenied
from .jsontext import compact_json
from .redaction import redact_body
from .streaming import forward_sse
from .strict import UnreadableUpstream, check_text, loads_strict, may_hold_calls
from .toolcalls import StreamInterceptor, ToolCallRejected
from .upstream import UpstreamResponse, forwardable_response_headers

__all__ = ["filtered_json", "relay_governed"]

BodyFilter = Callable[[Any], bool]  # filters a parsed body in place; True if it changed


async def relay_governed(
    request: web.Request,
    upstream: UpstreamResponse,
    *,
    stream: bool,
    interceptor: Callable[[], StreamInterceptor],
    body_filter: BodyFilter,
    keys: tuple[bytes, ...],
) -> web.StreamResponse:
    """The client's response for a governed request: intercepted, filtered, or an upstream error verbatim."""
    status = upstream.status
    if 300 <= status < 400:
        raise UnreadableUpstream(f"upstream answered a governed request with a redirect ({status})")
    if 200 <= status < 300 and stream:
        return await forward_sse(request, upstream, interceptor())
    body = await upstream.read()
    body = filtered_json(body, body_filter, keys) if 200 <= status < 300 else redact_body(body)
    return web.Response(body=body, status=status, headers=forwardable_response_headers(upstream.headers))


def filtered_json(body: bytes, body_filter: BodyFilter, keys: tuple[bytes, ...]) -> bytes:
    """A JSON body after policy: the same bytes if it provably holds no call, else parsed, filtered, re-encoded."""
    check_text(body)
    if not may_hold_calls(body, keys):
        return body
    document = loads_strict(body)
    try:
        changed = body_filter(document)
    except ToolCallRejected as exc:
        raise PolicyDenied(exc.message) from exc
    return compact_json(document).encode() if changed else body
