"""The client-facing /v1 API: one dispatcher over the route table, and the handlers of each route kind.

Every /v1 request is classified once (``celgate.policy.classify``: governed,
tool-free or not governed, on its canonical path). Governed routes are read
-> admit -> dispatch: read and check the body (``client_request``), admit the
caller (``caller.admit``: principal, policy view, request decision), then
forward with every tool call governed (``governed``), or run a drop-in agent
(``dropins``). Tool-free routes are admitted, then relayed verbatim. Routes
celgate does not govern are refused unless a policy ``routes:`` entry opens
them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from celgate.policy import Kind, NonCanonicalPath, RouteMatch, classify

from .caller import Caller, admit, open_route
from .chat_calls import CALL_KEYS as CHAT_CALL_KEYS
from .chat_calls import ChatStreamInterceptor, filter_completion, filter_messages
from .client_request import bounded_body, chat_body, json_body_or_none, passthrough_fields, read_body
from .dropins import find_dropin, list_agents_as_models, run_dropin
from .errors import BadRequest
from .forwarding import relay_created, relay_stored, upstream_request
from .governed import BodyFilter
from .jsontext import compact_json
from .keys import ENFORCER, RECORD
from .keys import ROUTE_MATCH as _MATCH
from .offered import without_tools
from .redaction import redact_body
from .responses_routes import RESPONSES_HANDLERS
from .router import add_route
from .streaming import forward_body
from .toolcalls import ToolCallHook
from .upstream import forwardable_response_headers

__all__ = ["add_routes"]

_EVENT_STREAM = "text/event-stream"
_PLAIN_PATHS = ("/v1/chat/completions", "/v1/responses")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application) -> None:
    # The busiest paths as plain resources too: aiohttp finds them with one dict lookup, where the
    # catch-all costs a walk up the path and a regex. Both reach the same dispatcher, which reads the raw path.
    for path in _PLAIN_PATHS:
        add_route(app, "*", path, dispatch, label="/v1/*")
    add_route(app, "*", "/v1/{tail:.*}", dispatch, label="/v1/*")


async def dispatch(request: web.Request) -> web.StreamResponse:
    """Classify the path, name the route in metrics, and hand over to its handler."""
    match = _classified(request)
    request[_MATCH] = match
    request[RECORD].route = match.label
    if match.kind is Kind.GOVERNED:
        return await _GOVERNED_HANDLERS[match.name](request)
    if match.kind is Kind.TOOL_FREE:
        return await passthrough(request)
    return await not_governed(request)


def _classified(request: web.Request) -> RouteMatch:
    """The request's route (``celgate.policy.classify``, which the policy CLI shares); non-canonical: 400."""
    try:
        return classify(request.method, request.rel_url.raw_path)
    except NonCanonicalPath as exc:
        raise BadRequest(str(exc), code="non_canonical_path") from exc


async def chat_completions(request: web.Request) -> web.StreamResponse:
    raw = await read_body(request)
    body = chat_body(raw)
    caller = admit(request, body)
    dropin = find_dropin(request, caller)
    if dropin is not None:
        return await run_dropin(request, dropin, body, caller)
    return await _forward_chat(request, caller, _without_unusable_tools(caller, body, raw))


async def _forward_chat(request: web.Request, caller: Caller, raw: bytes) -> web.StreamResponse:
    return await relay_created(
        request,
        raw,
        caller.tool_hook("upstream"),
        api="chat",
        stream=caller.info.stream,
        interceptor_for=lambda hook: ChatStreamInterceptor(hook, caller.max_held_bytes, _choices(caller)),
        filter_for=_completion_filter,
        keys=CHAT_CALL_KEYS,
    )


def _choices(caller: Caller) -> int:
    """How many choices the request asked for (``n``, type-checked by ``chat_body``)."""
    n = caller.info.scalars.get("n", 1)
    return n if isinstance(n, int) and n > 1 else 1


def _without_unusable_tools(caller: Caller, body: dict[str, Any], raw: bytes) -> bytes:
    """The body to send upstream: the original bytes, minus tools the principal can never use."""
    offered = caller.info.tools
    if not offered:
        return raw
    usable = caller.usable_tools(offered)
    if len(usable) == len(set(offered)) or not without_tools(body, usable.__contains__):
        return raw
    return compact_json(body).encode()


async def stored_chat(request: web.Request) -> web.StreamResponse:
    """Stored chat completions read back (list, retrieve, update, messages): their calls meet policy again."""
    raw = await read_body(request) if request.body_exists else None
    caller = admit(request, json_body_or_none(raw) if raw else None)
    return await relay_stored(
        request, raw, caller.tool_hook("stored"), _STORED_CHAT_FILTERS[request[_MATCH].name], CHAT_CALL_KEYS
    )


def _completion_filter(hook: ToolCallHook) -> BodyFilter:
    return lambda completion: filter_completion(completion, hook)


_STORED_CHAT_FILTERS: dict[str, Callable[[ToolCallHook], BodyFilter]] = {
    "chat.retrieve": _completion_filter,
    "chat.update": _completion_filter,
    "chat.list": lambda hook: lambda listing: _each(listing, _completion_filter(hook)),
    "chat.messages": lambda hook: (
        lambda listing: filter_messages(listing.get("data") if isinstance(listing, dict) else None, hook)
    ),
}


def _each(listing: Any, body_filter: BodyFilter) -> bool:
    data = listing.get("data") if isinstance(listing, dict) else None
    changed = False
    for entry in data if isinstance(data, list) else ():
        changed |= body_filter(entry)
    return changed


async def models(request: web.Request) -> web.StreamResponse:
    """The upstream's model list, with the drop-in agents this caller may use added."""
    caller = admit(request, None)
    agents = list_agents_as_models(request, caller)
    async with upstream_request(request, "GET", None) as response:
        body = await response.read()
        if response.status != 200 or not agents:
            return web.Response(
                body=redact_body(body) if response.status >= 400 else body,
                status=response.status,
                headers=forwardable_response_headers(response.headers),
            )
    try:
        listing = json.loads(body)
        listing["data"] = [*listing.get("data", []), *agents]
    except (ValueError, AttributeError, TypeError):
        listing = {"object": "list", "data": agents}
    return web.json_response(listing)


_STREAMED_TYPES = ("multipart/", "application/octet-stream", "audio/", "image/", "video/")


async def passthrough(request: web.Request) -> web.StreamResponse:
    """A tool-free route (or one a policy opened): admitted by policy, then forwarded verbatim both ways.

    With policy active every body is read whole (capped and timed) before admission: form bodies for
    their ``model`` field, anything else as JSON whatever its Content-Type says (an upstream may read
    JSON under any label). The bytes read go upstream unchanged. Under ``--no-policy`` uploads stream.
    """
    buffered = request.body_exists and (
        request.app[ENFORCER].enforcing or not request.content_type.startswith(_STREAMED_TYPES)
    )
    raw = await read_body(request) if buffered else b""
    admit(request, await passthrough_fields(request, raw) if buffered else None)
    upload = raw if buffered else (bounded_body(request) if request.body_exists else None)
    async with upstream_request(request, request.method, upload) as response:
        return await forward_body(request, response, sse=response.content_type == _EVENT_STREAM)


async def not_governed(request: web.Request) -> web.StreamResponse:
    """A path celgate cannot govern: refused, unless the policy opens it (``routes:``) for this caller."""
    open_route(request, request[_MATCH].path)
    return await passthrough(request)


_GOVERNED_HANDLERS: dict[str, Handler] = {
    "chat.create": chat_completions,
    "chat.list": stored_chat,
    "chat.retrieve": stored_chat,
    "chat.update": stored_chat,
    "chat.messages": stored_chat,
    "models.list": models,
    **RESPONSES_HANDLERS,
}
