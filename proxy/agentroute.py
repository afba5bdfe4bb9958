"""Serving drop-in agents on /v1/chat/completions and /v1/models.

The agent runs in-process (``adapters``); its own model calls come back to
celgate over loopback, carrying the caller's ``Authorization``,
``x-celgate-agent`` and an internal token, so they pass the same policy,
auth and metrics as any client call. A request that already carries
``x-celgate-agent`` is never routed to a drop-in: no recursion.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from celgate.adapters import AgentRunError, CallerContext, LoadedAgent, run_completion, stream_completion
from celgate.policy import PolicySet, Principal, RequestInfo

from .errors import AgentFailed
from .keys import AGENTS, EXCHANGE, GATEWAY_TOKEN, METRICS
from .sse import encode_data_event
from .streaming import end_with_error, start_stream

__all__ = ["find_dropin", "list_agents_as_models", "run_dropin"]

_DONE = b"data: [DONE]\n\n"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def find_dropin(request: web.Request, model: str) -> LoadedAgent | None:
    """The drop-in serving ``model``; an agent that failed to load is a 503, never a trip upstream."""
    registry = request.app.get(AGENTS)
    if registry is None or "x-celgate-agent" in request.headers:
        return None
    agent = registry.get(model)
    if agent is None and (failure := registry.failure(model)) is not None:
        raise AgentFailed(
            f"celgate: agent {model!r} failed to load ({failure['kind']}): {failure['message'].splitlines()[-1]}"
            " (details: GET /admin/agents/errors)",
            status=503, error_type="agent_error", code="agent_unavailable",
        )
    return agent


def list_agents_as_models(request: web.Request, policy: PolicySet, principal: Principal) -> list[dict[str, Any]]:
    """The loaded agents this principal may call (a dry request check per agent; nothing recorded)."""
    registry = request.app.get(AGENTS)
    if registry is None:
        return []
    return [
        {"id": name, "object": "model", "created": 0, "owned_by": "celgate-agent"}
        for name in registry.names()
        if not policy.check_request(principal, _listing_probe(request, name)).blocked
    ]


def _listing_probe(request: web.Request, name: str) -> RequestInfo:
    return RequestInfo(model=name, agent=name, stream=False, path="/v1/chat/completions",
                       headers={}, tools=(), scalars={})


async def run_dropin(
    request: web.Request, agent: LoadedAgent, body: dict[str, Any], principal: Principal, info: RequestInfo
) -> web.StreamResponse:
    caller = CallerContext(
        principal=principal,
        request=info,
        request_id=request[EXCHANGE].request_id,
        authorization=request.headers.get("Authorization"),
        gateway_url=_gateway_url(request),
        internal_token=request.app[GATEWAY_TOKEN],
    )
    if body.get("stream") is True:
        return await _stream(request, agent, body, caller)
    try:
        completion = await run_completion(agent, body, caller)
    except AgentRunError as exc:
        raise _as_celgate_error(exc) from exc
    return web.json_response(completion)


async def _stream(
    request: web.Request, agent: LoadedAgent, body: dict[str, Any], caller: CallerContext
) -> web.StreamResponse:
    """Stream the run; a failure before its first chunk is a plain HTTP error, later ones go in-band."""
    metrics = request.app[METRICS]
    chunks = stream_completion(agent, body, caller)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = None
    except AgentRunError as exc:
        await chunks.aclose()
        raise _as_celgate_error(exc) from exc
    response = await start_stream(request, 200, _SSE_HEADERS)
    metrics.active_streams.inc()
    try:
        if first is not None:
            await response.write(_encode(first))
            metrics.stream_ttfb.observe(time.perf_counter() - request[EXCHANGE].started)
            async for chunk in chunks:
                await response.write(_encode(chunk))
        await response.write(_DONE)
    except AgentRunError as exc:
        await end_with_error(request, response, _as_celgate_error(exc))
    finally:
        metrics.active_streams.dec()
        await chunks.aclose()  # cancels the run if the client left mid-stream
    await response.write_eof()
    return response


def _encode(chunk: dict[str, Any]) -> bytes:
    return encode_data_event(json.dumps(chunk, ensure_ascii=False, separators=(",", ":")))


def _as_celgate_error(exc: AgentRunError) -> AgentFailed:
    return AgentFailed(exc.message, status=exc.status, error_type=exc.type, code=exc.code)


def _gateway_url(request: web.Request) -> str:
    """celgate's own /v1 URL as reached by this connection (loopback for a sidecar)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    host, port = (sockname[0], sockname[1]) if sockname else ("127.0.0.1", 8080)
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/v1"
