"""Serving drop-in agents: routing a model name to its agent, running it, and governing its tool calls.

A drop-in is served on ``/v1/chat/completions`` and on ``/v1/responses``
(``run_dropin(..., api=...)``); ``celgate.adapters`` formats each API's
answers, this module only frames them (``data:`` chunks and ``[DONE]`` for
chat, ``event:`` + ``data:`` events for Responses).

The agent runs in-process (``celgate.adapters``); its own model calls come
back to celgate over loopback, carrying the caller's ``Authorization``,
``x-celgate-agent`` and the internal token, so they pass the same policy,
auth and metrics as any client call. celgate's own loopback calls are never
routed to a drop-in: no recursion. ``PolicyGatewayHooks`` is what the
adapters call for each tool call an agent makes (``adapters`` never imports
the proxy).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from typing import Any, Literal

from aiohttp import web

from celgate.adapters import (
    AgentRunError,
    CallerContext,
    LoadedAgent,
    ToolExecution,
    run_completion,
    run_response,
    stream_completion,
    stream_response,
)
from celgate.policy import Decision, RequestInfo, ToolCall

from .caller import Caller, is_internal_call
from .enforcement import Enforcer
from .errors import AgentFailed
from .keys import AGENTS, GATEWAY_TOKEN, METRICS, RECORD
from .metrics import Metrics
from .redaction import redact
from .sse import DONE_EVENT, data_event, named_event
from .streaming import end_with_error, start_stream

__all__ = ["PolicyGatewayHooks", "find_dropin", "list_agents_as_models", "run_dropin"]

_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def find_dropin(request: web.Request, caller: Caller) -> LoadedAgent | None:
    """The drop-in serving the admitted caller's model; one that failed to load is a 503, never a trip upstream."""
    registry = request.app.get(AGENTS)
    model = caller.info.model
    if registry is None or is_internal_call(request):
        return None
    agent = registry.get(model)
    if agent is None and (failure := registry.failure(model)) is not None:
        raise AgentFailed(
            redact(
                f"celgate: agent {model!r} failed to load ({failure.kind}): {failure.summary}"
                " (details: GET /admin/agents/errors)"
            ),
            status=503,
            error_type="agent_error",
            code="agent_unavailable",
        )
    return agent


def list_agents_as_models(request: web.Request, caller: Caller) -> list[dict[str, Any]]:
    """The loaded agents this principal may call (a dry request check per agent; nothing recorded)."""
    registry = request.app.get(AGENTS)
    if registry is None:
        return []
    return [
        {"id": name, "object": "model", "created": 0, "owned_by": "celgate-agent"}
        for name in registry.names()
        if not caller.policy.check_request(caller.principal, _listing_probe(name)).blocked
    ]


def _listing_probe(name: str) -> RequestInfo:
    return RequestInfo(
        model=name, agent=name, stream=False, path="/v1/chat/completions", headers={}, tools=(), scalars={}
    )


async def run_dropin(
    request: web.Request,
    agent: LoadedAgent,
    body: dict[str, Any],
    caller: Caller,
    api: Literal["chat", "responses"] = "chat",
) -> web.StreamResponse:
    """Run the drop-in for an admitted request of ``api`` (``POST /v1/chat/completions`` or ``/v1/responses``)."""
    context = CallerContext(
        principal=caller.principal,
        request=caller.info,
        request_id=caller.request_id,
        authorization=request.headers.get("Authorization"),
        gateway_url=_gateway_url(request),
        internal_token=request.app[GATEWAY_TOKEN],
    )
    if body.get("stream") is True:
        if api == "responses":
            return await _stream(request, stream_response(agent, body, context), _response_event, b"")
        return await _stream(request, stream_completion(agent, body, context), data_event, DONE_EVENT)
    run = run_response if api == "responses" else run_completion
    try:
        answer = await run(agent, body, context)
    except AgentRunError as exc:
        raise _as_celgate_error(exc) from exc
    return web.json_response(answer)


async def _stream(
    request: web.Request,
    events: AsyncGenerator[dict[str, Any], None],
    frame: Callable[[dict[str, Any]], bytes],
    trailer: bytes,
) -> web.StreamResponse:
    """Stream the run; a failure before its first event is a plain HTTP error, later ones go in-band.

    ``trailer`` ends a stream that completed (chat's ``[DONE]``; Responses has none).
    """
    metrics = request.app[METRICS]
    try:
        first = await anext(events)
    except StopAsyncIteration:
        first = None
    except AgentRunError as exc:
        await events.aclose()
        raise _as_celgate_error(exc) from exc
    response = await start_stream(request, 200, _SSE_HEADERS)
    metrics.active_streams.inc()
    try:
        if first is not None:
            await response.write(frame(first))
            metrics.stream_ttfb.observe(time.perf_counter() - request[RECORD].started)
            async for event in events:
                await response.write(frame(event))
        if trailer:
            await response.write(trailer)
    except AgentRunError as exc:
        await end_with_error(request, response, _as_celgate_error(exc))
    finally:
        metrics.active_streams.dec()
        await events.aclose()  # cancels the run if the client left mid-stream
    await response.write_eof()
    return response


def _response_event(event: dict[str, Any]) -> bytes:
    """A Responses stream event, named by its type as the API sends them."""
    return named_event(event["type"], event)


def _as_celgate_error(exc: AgentRunError) -> AgentFailed:
    """The run's failure as the client gets it, redacted: it quotes exceptions of agent and tool code."""
    return AgentFailed(redact(exc.message), status=exc.status, error_type=exc.type, code=exc.code)


def _gateway_url(request: web.Request) -> str:
    """celgate's own /v1 URL as reached by this connection (loopback for a sidecar)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    host, port = (sockname[0], sockname[1]) if sockname else ("127.0.0.1", 8080)
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/v1"


class PolicyGatewayHooks:
    """``celgate.adapters.GatewayHooks`` over the app's enforcer and metrics."""

    def __init__(self, enforcer: Enforcer, metrics: Metrics) -> None:
        self._enforcer = enforcer
        self._metrics = metrics

    def check_tool(self, caller: CallerContext, tool: ToolCall) -> Decision:
        """Decide an agent's tool call on the policy active now (recorded unless ``--no-policy``)."""
        enforcer = self._enforcer
        decision = enforcer.policy().check_tool_call(caller.principal, caller.request, tool)
        if enforcer.enforcing:
            enforcer.record(decision, caller.request_id, caller.principal, tool)
        return decision

    def tool_finished(self, tool_name: str, seconds: float, failed: bool) -> None:
        self._metrics.tool_duration.labels(tool_name).observe(seconds)
        if failed:
            self._metrics.tool_failures.labels(tool_name).inc()

    def tool_executed(self, caller: CallerContext, execution: ToolExecution) -> None:
        self._enforcer.executed(execution, caller.request_id, caller.principal)

    def load_failed(self, agent: str, kind: str) -> None:
        self._metrics.agent_load_failures.labels(agent, kind).inc()

    def tool_load_failed(self, tool: str, kind: str) -> None:
        self._metrics.tool_load_failures.labels(tool, kind).inc()
