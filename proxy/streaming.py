"""Forwarding response bodies to the client as they arrive.

``forward_sse`` relays an event stream whose tool calls policy must see:
upstream reads are cut into whole SSE events, passed through the stream's
interceptor and written at once (one write per upstream read; two when a
read holds events that need no look before one that does: those go out
first, so the client never waits for a decision on events behind them). One event
may hold at most ``--max-upstream-event-bytes``: past it the stream ends
with an SSE ``error`` event and the upstream connection is closed.
``forward_body`` relays any other body verbatim. A fault after the response
started goes in-band: an SSE ``error`` event for event streams (never a
made-up ``[DONE]``), a cut connection for other bodies. A client that leaves
cancels the handler (``server.serve`` runs every server with handler
cancellation), which closes the upstream response at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from aiohttp import web

from .errors import CelgateError, PolicyDenied, ShuttingDown, UpstreamError, sse_error_event
from .keys import METRICS, RECORD
from .lifecycle import is_drain
from .redaction import redact_body
from .sse import SSESplitter
from .toolcalls import StreamInterceptor, ToolCallRejected, intercept, looked, unlooked
from .upstream import UpstreamResponse, forwardable_response_headers

__all__ = ["end_with_error", "forward_body", "forward_sse", "start_stream"]

log = logging.getLogger("celgate.stream")


async def start_stream(
    request: web.Request, status: int, headers: Mapping[str, str] | None = None, content_length: int | None = None
) -> web.StreamResponse:
    """Prepare a streamed response with the request id (headers go out now) and count it."""
    response = web.StreamResponse(status=status, headers=headers)
    if content_length is not None:
        response.content_length = content_length
    record = request[RECORD]
    response.headers["x-request-id"] = record.request_id
    await response.prepare(request)
    record.status = status
    return response


async def forward_sse(
    request: web.Request, upstream: UpstreamResponse, interceptor: StreamInterceptor | None
) -> web.StreamResponse:
    """Relay an event stream event by event, through ``interceptor`` when policy must see its tool calls."""
    metrics = request.app[METRICS]
    response = await start_stream(request, upstream.status, forwardable_response_headers(upstream.headers))
    splitter = SSESplitter()
    limit = upstream.limits.event_bytes
    started = request[RECORD].started
    first_byte = True

    async def write(pieces: list[bytes]) -> None:
        nonlocal first_byte
        await response.write(b"".join(pieces))
        if first_byte:
            first_byte = False
            metrics.stream_ttfb.observe(time.perf_counter() - started)

    metrics.active_streams.inc()
    try:
        async for data in upstream.iter_chunks():
            held = len(splitter.pending) + len(data)
            events = splitter.feed(data)
            if held > limit:  # only then can an event, or the unfinished one, be over the limit
                _check_event_sizes(upstream, events, splitter.pending, limit)
            clear = unlooked(interceptor, events)
            if clear:
                await write(events[:clear] if clear < len(events) else events)
            if interceptor is not None and clear < len(events):  # without one, every event is clear
                pieces = looked(interceptor, events[clear:])
                if pieces:
                    await write(pieces)
        tail = intercept(interceptor, splitter.flush())
        if splitter.pending.strip():
            raise UpstreamError("upstream stream ended inside an event", code="upstream_reset")
        if interceptor is not None:
            tail += interceptor.finish()
        if tail:
            await response.write(b"".join(tail))
    except ToolCallRejected as exc:
        await end_with_error(request, response, PolicyDenied(exc.message))
    except UpstreamError as exc:
        metrics.upstream_fault(exc.code)
        await end_with_error(request, response, exc)
    except Exception:  # a bug of celgate's own: the stream still ends in-band, never with a second HTTP head
        log.exception("stream failed", extra={"fields": {"request_id": request[RECORD].request_id}})
        await end_with_error(request, response, CelgateError("celgate: internal error"))
    except asyncio.CancelledError as exc:
        if is_drain(exc):  # celgate is stopping, not the client leaving: say so in-band
            await end_with_error(request, response, ShuttingDown("celgate is shutting down; the stream was cut"))
            await response.write_eof()
        raise
    finally:
        metrics.active_streams.dec()
    await response.write_eof()
    return response


def _check_event_sizes(upstream: UpstreamResponse, events: list[bytes], pending: bytes, limit: int) -> None:
    """One SSE event over ``limit`` bytes (whole, or still arriving) is a fault: memory stays bounded."""
    if len(pending) > limit or any(len(event) > limit for event in events):
        raise upstream.too_large("an SSE event", limit)


async def forward_body(request: web.Request, upstream: UpstreamResponse, *, sse: bool) -> web.StreamResponse:
    """Relay status, headers and body verbatim, chunk by chunk; an error body whole, with its secrets redacted."""
    headers = forwardable_response_headers(upstream.headers)
    if upstream.status >= 400:
        return web.Response(body=redact_body(await upstream.read()), status=upstream.status, headers=headers)
    length = upstream.content_length if "Content-Encoding" not in upstream.headers else None
    response = await start_stream(request, upstream.status, headers, length)
    try:
        async for data in upstream.iter_chunks():
            await response.write(data)
    except UpstreamError as exc:
        request.app[METRICS].upstream_fault(exc.code)
        if not sse:
            _cut(request, exc)  # a truncated body must not look complete
            return response
        await end_with_error(request, response, exc)
    await response.write_eof()
    return response


def _cut(request: web.Request, exc: CelgateError) -> None:
    log.warning("body cut: %s", exc.message, extra={"fields": {"request_id": request[RECORD].request_id}})
    request[RECORD].status = exc.status
    if request.transport is not None:
        request.transport.close()


async def end_with_error(request: web.Request, response: web.StreamResponse, exc: CelgateError) -> None:
    """After the response started: the error goes in-band as an SSE ``error`` event (no ``[DONE]`` follows)."""
    log.warning("stream ended early: %s", exc.message, extra={"fields": {"request_id": request[RECORD].request_id}})
    request[RECORD].status = exc.status  # the access log shows the fault, not the 200 that went out first
    await response.write(sse_error_event(exc))
