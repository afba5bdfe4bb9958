"""The Responses API routes: create (stream and not), and the stored responses read back.

``POST /v1/responses`` is read -> admit -> dispatch like chat: hosted tools
are judged at admission (``request.tools`` / ``request.tool_definitions``),
functions and custom tools no rule could allow are removed, and every call
item the app would execute passes the tool-call point (``responses_calls``).

Server-side state: the upstream stores the response as it produced it,
including calls celgate stripped, and refuses a follow-up
(``previous_response_id`` or ``conversation``) that does not answer them.
celgate keeps no map of its own (a follow-up may land on another worker or
replica): it reads the previous response (``GET /v1/responses/{id}``) or the
conversation's recent items back from the upstream with the caller's own
credentials, re-decides their calls, and adds an output carrying the deny
message for each denied call nobody answered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from celgate.policy import ToolCall
from celgate.policy.route_table import ID_PATTERN

from .caller import Caller, admit
from .client_request import INTERNAL_HEADERS, json_body_or_none, read_body, responses_body
from .dropins import find_dropin, run_dropin
from .errors import BadRequest, UpstreamError
from .forwarding import relay_created, relay_stored, upstream_request
from .governed import BodyFilter, relay_governed
from .jsontext import compact_json
from .keys import AUTH, RECORD, ROUTE_MATCH, UPSTREAM
from .offered import without_tools
from .responses_calls import (
    CALL_KEYS,
    ResponsesStreamInterceptor,
    filter_item_list,
    filter_response,
    is_client_call,
    proposed_call,
)
from .strict import UnreadableUpstream, loads_strict
from .toolcalls import ToolCallHook
from .upstream import forwardable_request_headers

__all__ = ["RESPONSES_HANDLERS"]

# What answers a stripped call of each client-executed type (computer, program and tool_search calls
# cannot be answered with text: their follow-ups are the upstream's to refuse).
_ANSWERS: dict[str, Callable[[str, str], dict[str, Any]]] = {
    "function_call": lambda call_id, text: {"type": "function_call_output", "call_id": call_id, "output": text},
    "custom_tool_call": lambda call_id, text: {"type": "custom_tool_call_output", "call_id": call_id, "output": text},
    "local_shell_call": lambda call_id, text: {"type": "local_shell_call_output", "id": call_id, "output": text},
    "shell_call": lambda call_id, text: {
        "type": "shell_call_output",
        "call_id": call_id,
        "output": [{"stdout": "", "stderr": text, "outcome": {"type": "exit", "exit_code": 1}}],
    },
    "apply_patch_call": lambda call_id, text: {
        "type": "apply_patch_call_output",
        "call_id": call_id,
        "status": "failed",
        "output": text,
    },
}


async def create(request: web.Request) -> web.StreamResponse:
    raw = await read_body(request)
    body = responses_body(raw)
    caller = admit(request, body)
    dropin = find_dropin(request, caller)
    if dropin is not None:
        return await run_dropin(request, dropin, body, caller, api="responses")
    hook = caller.tool_hook("upstream")
    changed = _without_unusable_tools(caller, body)
    if hook is not None:
        changed |= await _answer_stripped_calls(request, caller, body)
    return await relay_created(
        request,
        compact_json(body).encode() if changed else raw,
        hook,
        api="responses",
        stream=caller.info.stream,
        interceptor_for=lambda hook: ResponsesStreamInterceptor(hook, caller.max_held_bytes),
        filter_for=_response_filter,
        keys=CALL_KEYS,
    )


def _without_unusable_tools(caller: Caller, body: dict[str, Any]) -> bool:
    offered = caller.info.tools
    if not offered:
        return False
    usable = caller.usable_tools(offered)
    return len(usable) != len(set(offered)) and without_tools(body, usable.__contains__)


async def _answer_stripped_calls(request: web.Request, caller: Caller, body: dict[str, Any]) -> bool:
    """Answer the denied calls of the previous response (or conversation) nobody answered; True if ``body`` changed."""
    previous, conversation = _state_id(body, "previous_response_id"), _state_id(body, "conversation")
    if previous is not None:
        stored = _output_items(await _stored(request, f"/v1/responses/{previous}"), "output")
    elif conversation is not None:  # newest first; the outputs already in the conversation answer their calls
        stored = _output_items(await _stored(request, f"/v1/conversations/{conversation}/items", _RECENT), "data")
    else:
        return False
    given = body.get("input")
    items = [{"type": "message", "role": "user", "content": given}] if isinstance(given, str) else list(given or [])
    answered = {i.get("call_id") or i.get("id") for i in [*items, *stored] if isinstance(i, dict) and _is_output(i)}
    answers = [answer for item in stored if (answer := _answer(caller, item, answered)) is not None]
    if not answers:
        return False
    body["input"] = [*answers, *items]
    return True


_RECENT = "order=desc&limit=100"


def _state_id(body: dict[str, Any], field: str) -> str | None:
    """``previous_response_id``, or ``conversation`` (an id or ``{"id": ...}``), checked to be a plain id."""
    value = body.get(field)
    if isinstance(value, dict):
        value = value.get("id")
    if value is None:
        return None
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise BadRequest(f"'{field}' is not an id", param=field, code="invalid_value")
    return value


def _is_output(item: dict[str, Any]) -> bool:
    kind = item.get("type")
    return isinstance(kind, str) and kind.endswith("_output")


def _output_items(stored: Any, field: str) -> list[dict[str, Any]]:
    output = stored.get(field) if isinstance(stored, dict) else None
    return [item for item in output if isinstance(item, dict)] if isinstance(output, list) else []


def _answer(caller: Caller, item: dict[str, Any], answered: set[Any]) -> dict[str, Any] | None:
    """The output answering one stored call policy denies now, unless the client answered it itself."""
    make = _ANSWERS.get(item.get("type", ""))  # only known types answer: an unknown one is no call to answer
    if make is None or not is_client_call(item):
        return None
    call = proposed_call(item)
    if call.call_id in answered:
        return None
    tool = ToolCall(name=call.name, raw_arguments=call.raw_arguments, id=call.call_id, source="stored", type=call.type)
    decision = caller.check_tool(tool)  # re-decided now, and recorded (metrics, audit) like any decision
    return make(call.call_id, decision.message) if decision.blocked else None


async def _stored(request: web.Request, path: str, query: str = "") -> Any:
    """An object the upstream stored, read with the caller's credentials; None if it cannot be read."""
    app = request.app
    headers = forwardable_request_headers(request.headers, INTERNAL_HEADERS | {"content-type"})
    app[AUTH].apply_upstream_key(headers)
    headers["x-request-id"] = request[RECORD].request_id
    try:
        async with app[UPSTREAM].request("GET", path, headers, query=query) as response:
            if response.status != 200:
                return None
            return loads_strict(await response.read())
    except (UpstreamError, UnreadableUpstream):
        return None


async def retrieve(request: web.Request) -> web.StreamResponse:
    """A stored response read back: its calls meet policy again (a resumed stream is intercepted)."""
    caller = admit(request, None)
    hook = caller.tool_hook("stored")
    if request.query.get("stream") != "true" or hook is None:
        return await relay_stored(request, None, hook, _response_filter, CALL_KEYS)
    async with upstream_request(request, "GET", None) as response:
        return await relay_governed(
            request,
            response,
            stream=True,
            interceptor=lambda: ResponsesStreamInterceptor(hook, caller.max_held_bytes),
            body_filter=_response_filter(hook),
            keys=CALL_KEYS,
        )


async def stored_with_body(request: web.Request) -> web.StreamResponse:
    """``cancel``, ``compact`` and ``input_items``: objects holding output items, filtered like a fresh reply."""
    raw = await read_body(request) if request.body_exists else None
    caller = admit(request, json_body_or_none(raw) if raw else None)
    filter_for = _item_list_filter if request[ROUTE_MATCH].name == "responses.input_items" else _response_filter
    return await relay_stored(request, raw, caller.tool_hook("stored"), filter_for, CALL_KEYS)


def _response_filter(hook: ToolCallHook) -> BodyFilter:
    return lambda document: filter_response(document, hook)


def _item_list_filter(hook: ToolCallHook) -> BodyFilter:
    return lambda listing: filter_item_list(listing, hook)


RESPONSES_HANDLERS: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
    "responses.create": create,
    "responses.retrieve": retrieve,
    "responses.cancel": stored_with_body,
    "responses.compact": stored_with_body,
    "responses.input_items": stored_with_body,
}
