"""One request's frame: its id, its bookkeeping, and its errors as OpenAI JSON.

``framed(route)`` wraps every handler (a decorator rather than an aiohttp
middleware: a middleware chain adds two coroutine frames per request, ~10 µs,
measured). It is the one place where exceptions become responses
(``CelgateError`` -> its status; HTTP exceptions -> OpenAI shape; anything
unexpected -> 500, logged with the request id) and where the access line and
request metrics are written. ``CancelledError`` (the client left) is recorded
as 499 and re-raised, never swallowed. Unknown paths reach ``not_found``
through a catch-all route, so they are framed too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import CelgateError, UpstreamError, error_body, error_response
from .exchange import Exchange
from .inbound import request_id_from
from .keys import ACCESS_LOG, EXCHANGE, METRICS

__all__ = ["add_request_id_header", "framed", "not_found"]

log = logging.getLogger("celgate")
_CLIENT_CLOSED = 499  # nginx's code for "client closed request"


def framed(route: str) -> Callable[[Handler], Handler]:
    """Give ``handler`` its request frame; ``route`` labels its metrics."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def frame(request: web.Request) -> web.StreamResponse:
            exchange = Exchange(request_id_from(request.headers), route, time.perf_counter())
            request[EXCHANGE] = exchange
            try:
                response = await handler(request)
                exchange.status = exchange.status or response.status
            except CelgateError as exc:
                if isinstance(exc, UpstreamError):  # faults mid-body are counted where they are caught
                    request.app[METRICS].upstream_fault(exc.code)
                response = _error_before_start(exchange, exc)
            except web.HTTPException as exc:
                response = _http_error(exc)
                exchange.status = response.status
            except asyncio.CancelledError:
                exchange.status = _CLIENT_CLOSED  # even mid-stream: the client did not get the whole answer
                raise
            except Exception:
                log.exception("unhandled error", extra={"fields": {"request_id": exchange.request_id}})
                response = error_response(CelgateError("celgate: internal error"))
                exchange.status = response.status
            finally:
                _record(request, exchange)
            return response

        return frame

    return decorate


async def not_found(request: web.Request) -> web.StreamResponse:
    """The catch-all route: unknown paths get a framed OpenAI-style 404, known ones with a wrong method 405."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        match, methods = await resource.resolve(request)
        if match is None and resource is not request.match_info.route.resource:
            allowed |= methods
    allowed.discard("*")
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, sorted(allowed))
    raise web.HTTPNotFound()


def _error_before_start(exchange: Exchange, exc: CelgateError) -> web.StreamResponse:
    if exchange.status:  # headers already went out: nothing more can be said in-band here
        raise exc
    exchange.status = exc.status
    return error_response(exc)


def _http_error(exc: web.HTTPException) -> web.Response:
    message = f"celgate: {exc.reason} ({exc.status})"
    code = "not_found" if exc.status == 404 else "method_not_allowed" if exc.status == 405 else None
    response = web.json_response(error_body(message, "invalid_request_error", code), status=exc.status)
    if exc.status == 405 and "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


def _record(request: web.Request, exchange: Exchange) -> None:
    status = exchange.status
    duration = time.perf_counter() - exchange.started
    metrics = request.app[METRICS]
    metrics.requests.labels(exchange.route, exchange.model, str(status)).inc()
    metrics.request_duration.labels(exchange.route).observe(duration)
    access = request.app.get(ACCESS_LOG)
    if access is not None:
        access.log(exchange.request_id, request.method, request.path, status, duration, exchange.model,
                   exchange.principal, exchange.stream)


async def add_request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response carries the request id; status is noted."""
    exchange = request.get(EXCHANGE)
    if exchange is not None:
        response.headers["x-request-id"] = exchange.request_id
