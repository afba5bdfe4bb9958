"""The client-facing OpenAI routes: chat completions, models, everything else under /v1.

Handlers stay thin: read and check the request (``inbound``), decide
(``enforcement``), then forward (``upstream`` + ``streaming``) or run a
drop-in agent (``agentroute``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from celgate.policy import PolicySet, Principal, RequestInfo

from .agentroute import find_dropin, list_agents_as_models, run_dropin
from .errors import PolicyDenied
from .frame import framed
from .inbound import (
    INTERNAL_HEADERS,
    bounded_body,
    chat_body,
    json_body_or_none,
    read_body,
    request_info,
    tool_name,
)
from .interceptor import ToolCallRejected, filter_completion
from .pool import StreamedBody
from .keys import AUTH, ENFORCER, EXCHANGE, GATEWAY_TOKEN, METRICS, SETTINGS, UPSTREAM
from .streaming import forward_body, forward_sse
from .upstream import forwardable_request_headers, forwardable_response_headers

__all__ = ["add_routes"]

_TOOL_CALLS_KEY = b'"tool_calls"'
_EVENT_STREAM = "text/event-stream"


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", framed("/v1/chat/completions")(chat_completions))
    app.router.add_get("/v1/models", framed("/v1/models")(models))
    app.router.add_route("*", "/v1/{tail:.*}", framed("/v1/*")(passthrough))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    app = request.app
    exchange = request[EXCHANGE]
    raw = await read_body(request, app[SETTINGS].max_body_bytes)
    body = chat_body(raw)
    model: str = body["model"]
    exchange.model, exchange.stream = model, body.get("stream") is True
    policy = app[ENFORCER].policy()
    principal = app[AUTH].principal(request.headers, policy)
    exchange.principal = principal.id
    dropin = find_dropin(request, model)
    agent = request.headers.get("x-celgate-agent") or (model if dropin is not None else None)
    info = request_info(request, body, agent)
    app[ENFORCER].admit(policy, principal, info, exchange.request_id)
    if dropin is not None:
        return await run_dropin(request, dropin, body, principal, info)
    raw = _without_unusable_tools(request, policy, principal, info, body, raw)
    return await _forward_chat(request, raw, policy, principal, info)


async def _forward_chat(
    request: web.Request, raw: bytes, policy: PolicySet, principal: Principal, info: RequestInfo
) -> web.StreamResponse:
    app = request.app
    exchange = request[EXCHANGE]
    hook = app[ENFORCER].tool_hook(policy, principal, info, exchange.request_id, "upstream")
    started = time.perf_counter()
    async with _upstream_request(request, "POST", raw) as response:
        app[METRICS].upstream_duration.labels("chat").observe(time.perf_counter() - started)
        if response.status == 200 and response.content_type == _EVENT_STREAM:
            return await forward_sse(request, response, hook)
        body = await app[UPSTREAM].read_body(response)
        if response.status == 200 and _TOOL_CALLS_KEY in body:
            body = _filtered_completion(body, hook)
        return web.Response(body=body, status=response.status, headers=forwardable_response_headers(response.headers))


def _filtered_completion(body: bytes, hook: Any) -> bytes:
    try:
        completion = json.loads(body)
    except ValueError:
        return body  # not ours to repair: the client sees what the upstream sent
    try:
        changed = isinstance(completion, dict) and filter_completion(completion, hook)
    except ToolCallRejected as exc:
        raise PolicyDenied(exc.message) from exc
    return json.dumps(completion, ensure_ascii=False).encode() if changed else body


def _without_unusable_tools(
    request: web.Request,
    policy: PolicySet,
    principal: Principal,
    info: RequestInfo,
    body: dict[str, Any],
    raw: bytes,
) -> bytes:
    """The body to send upstream: the original bytes, minus tools the principal can never use."""
    if not info.tools:
        return raw
    usable = request.app[ENFORCER].usable_tools(policy, principal, info, info.tools)
    if len(usable) == len(set(info.tools)):
        return raw
    body["tools"] = [t for t in body["tools"] if tool_name(t) in usable]
    if not body["tools"]:
        for field in ("tools", "tool_choice", "parallel_tool_calls"):
            body.pop(field, None)
    return json.dumps(body, ensure_ascii=False).encode()


async def models(request: web.Request) -> web.StreamResponse:
    """The upstream's model list, with the drop-in agents added."""
    app = request.app
    policy = app[ENFORCER].policy()
    principal = app[AUTH].principal(request.headers, policy)
    request[EXCHANGE].principal = principal.id
    agents = list_agents_as_models(request, policy, principal)
    async with _upstream_request(request, "GET", None) as response:
        body = await app[UPSTREAM].read_body(response)
        if response.status != 200 or not agents:
            return web.Response(body=body, status=response.status, headers=forwardable_response_headers(response.headers))
    try:
        listing = json.loads(body)
        listing["data"] = [*listing.get("data", []), *agents]
    except (ValueError, AttributeError, TypeError):
        listing = {"object": "list", "data": agents}
    return web.json_response(listing)


async def passthrough(request: web.Request) -> web.StreamResponse:
    """Any other /v1 path: admitted by policy, then forwarded verbatim both ways."""
    app = request.app
    exchange = request[EXCHANGE]
    limit = app[SETTINGS].max_body_bytes
    buffered = request.body_exists and "json" in request.content_type
    raw = await read_body(request, limit) if buffered else b""
    body = json_body_or_none(request, raw)
    policy = app[ENFORCER].policy()
    principal = app[AUTH].principal(request.headers, policy)
    exchange.principal = principal.id
    info = request_info(request, body, request.headers.get("x-celgate-agent"))
    exchange.model, exchange.stream = info.model, info.stream
    app[ENFORCER].admit(policy, principal, info, exchange.request_id)
    upload = raw if buffered else (bounded_body(request, limit) if request.body_exists else None)
    async with _upstream_request(request, request.method, upload) as response:
        return await forward_body(request, response, sse=response.content_type == _EVENT_STREAM)


def _upstream_request(request: web.Request, method: str, body: bytes | StreamedBody | None):  # type: ignore[no-untyped-def]
    """Open the upstream response for this request: headers cleaned, auth applied."""
    app = request.app
    headers = forwardable_request_headers(request.headers, INTERNAL_HEADERS)
    app[AUTH].apply_upstream_key(headers)
    headers["x-request-id"] = request[EXCHANGE].request_id
    return app[UPSTREAM].request(
        method,
        request.rel_url.raw_path,  # as the client encoded it: %2F, %2B and %26 keep their meaning
        headers,
        body,
        query=request.rel_url.raw_query_string,
        base_url=_trusted_upstream(request),
    )


def _trusted_upstream(request: web.Request) -> str | None:
    """A drop-in agent's own upstream, honoured only on celgate's authenticated loopback calls."""
    override = request.headers.get("x-celgate-upstream")
    if override and request.headers.get("x-celgate-internal") == request.app[GATEWAY_TOKEN]:
        return override
    return None

