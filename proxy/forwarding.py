"""Forwarding a request upstream, and relaying replies that need no tool-call governance of their own.

Shared by every route module: ``upstream_request`` opens the upstream
response with the client's headers cleaned and auth applied;
``relay_created`` sends a new completion or response upstream and relays
the reply governed; ``relay_stored`` forwards a read of stored objects
through the same filters a fresh reply meets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from aiohttp import web

from .caller import is_internal_call
from .client_request import INTERNAL_HEADERS
from .governed import BodyFilter, relay_governed
from .keys import AUTH, METRICS, RECORD, UPSTREAM
from .pool import StreamedBody
from .redaction import redact_body
from .streaming import forward_sse
from .toolcalls import StreamInterceptor, ToolCallHook
from .upstream import UpstreamResponse, forwardable_request_headers, forwardable_response_headers

__all__ = ["relay_created", "relay_stored", "relay_ungoverned", "upstream_request"]

_EVENT_STREAM = "text/event-stream"


def upstream_request(
    request: web.Request, method: str, body: bytes | StreamedBody | None
) -> AbstractAsyncContextManager[UpstreamResponse]:
    """Open the upstream response for this request: headers cleaned, auth applied."""
    app = request.app
    headers = forwardable_request_headers(request.headers, INTERNAL_HEADERS)
    app[AUTH].apply_upstream_key(headers)
    headers["x-request-id"] = request[RECORD].request_id
    return app[UPSTREAM].request(
        method,
        request.rel_url.raw_path,  # as the client encoded it (canonical: the route table checked it)
        headers,
        body,
        query=request.rel_url.raw_query_string,
        base_url=_trusted_upstream(request),
    )


def _trusted_upstream(request: web.Request) -> str | None:
    """A drop-in agent's own upstream, honoured only on celgate's authenticated loopback calls."""
    override = request.headers.get("x-celgate-upstream")
    return override if override and is_internal_call(request) else None


async def relay_ungoverned(request: web.Request, response: UpstreamResponse) -> web.StreamResponse:
    """``--no-policy``: streams relayed event by event, bodies as they are."""
    if response.status == 200 and response.content_type == _EVENT_STREAM:
        return await forward_sse(request, response, None)
    body = await response.read()
    if response.status >= 400:
        body = redact_body(body)
    return web.Response(body=body, status=response.status, headers=forwardable_response_headers(response.headers))


async def relay_created(
    request: web.Request,
    raw: bytes,
    hook: ToolCallHook | None,
    *,
    api: str,
    stream: bool,
    interceptor_for: Callable[[ToolCallHook], StreamInterceptor],
    filter_for: Callable[[ToolCallHook], BodyFilter],
    keys: tuple[bytes, ...],
) -> web.StreamResponse:
    """POST a new chat completion or response upstream (timed as ``api``); with policy active, govern the reply."""
    started = time.perf_counter()
    async with upstream_request(request, "POST", raw) as response:
        request.app[METRICS].upstream_duration.labels(api).observe(time.perf_counter() - started)
        if hook is None:
            return await relay_ungoverned(request, response)
        return await relay_governed(
            request,
            response,
            stream=stream,
            interceptor=lambda: interceptor_for(hook),
            body_filter=filter_for(hook),
            keys=keys,
        )


async def relay_stored(
    request: web.Request,
    raw: bytes | None,
    hook: ToolCallHook | None,
    filter_for: Callable[[ToolCallHook], BodyFilter],
    keys: tuple[bytes, ...],
) -> web.StreamResponse:
    """Forward a read of stored objects; with policy active, the reply is filtered like a fresh one."""
    async with upstream_request(request, request.method, raw) as response:
        if hook is None:
            return await relay_ungoverned(request, response)
        return await relay_governed(
            request, response, stream=False, interceptor=_no_stream, body_filter=filter_for(hook), keys=keys
        )


def _no_stream() -> StreamInterceptor:
    raise AssertionError("a stored-object read is never streamed")
