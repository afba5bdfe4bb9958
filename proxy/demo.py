"""The built-in demo model behind ``--upstream demo``: a real OpenAI-compatible server.

It listens on a loopback port beside the proxy, so the proxy path is exactly
the production one, and needs no key and no network. Answers are
deterministic: a message mentioning the weather gets a ``get_weather`` tool
call, one mentioning a shell gets a ``shell.exec`` call, a tool result gets a
sentence using it, anything else an echo streamed word by word. When the
request offers tools (as an agent's model call does), the demo calls the
offered tool whose name fits the message (``get_weather`` for weather,
``shell*`` for a shell, else a tool a word of whose name the message uses,
as ``lookup_order`` for "order 1001"; ``transfer_to_*`` to hand off), with
arguments made from the tool's JSON schema: places get the city, ids the
number in the message, queries the message itself.

It speaks chat completions (``/v1/chat/completions``) and the Responses API
(``POST /v1/responses``, ``GET``/``DELETE /v1/responses/{id}``) with the same
replies: a Responses ``input`` is read as chat messages, so one reply function
serves both. Responses are kept (a bounded dict) as the real API stores them,
because celgate reads a previous response back to answer the calls it
stripped, and the demo refuses a ``previous_response_id`` follow-up that leaves
one of its function calls unanswered, as the real API does.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .jsontext import compact_json
from .sse import DONE_EVENT, data_event, named_event

__all__ = ["DemoServer", "Reply", "demo_reply", "responses_messages"]

MODEL = "demo"
_INVOICE = re.compile(r"\bINV-\d+\b", re.IGNORECASE)
_CITY = re.compile(r"\b(?:in|for|at)\s+([A-Z][\w .'-]*?)(?:[?.!,]|$)")
_NUMBER = re.compile(r"\b\d+\b")
_QUERY_PARAMETERS = ("query", "question", "text", "q")


@dataclass(frozen=True, slots=True)
class Reply:
    """One turn of the demo model: a text, or one tool call with its arguments."""

    text: str = ""
    tool: str | None = None
    arguments: dict[str, Any] | None = None
    call_id: str = "call_demo_1"


def demo_reply(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> Reply:
    """What the demo model says to this conversation (pure, deterministic)."""
    reply = _reply(messages, tools)
    if reply.tool is None:
        return reply
    return Reply(tool=reply.tool, arguments=reply.arguments, call_id=f"call_demo_{len(messages)}")  # unique per turn


def _reply(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> Reply:
    last = messages[-1] if messages else {}
    if last.get("role") == "tool" and not _is_handoff_result(last):
        return Reply(f"Here is what the tool returned: {_text(last)}")
    text = _last_user_text(messages)
    lowered = text.lower()
    match = _CITY.search(text)
    city = match.group(1).strip() if match else "Paris"
    offered = {t["function"]["name"]: t["function"] for t in tools or () if isinstance(t.get("function"), dict)}
    if offered:
        return _reply_with_offered(offered, messages, lowered, city, text)
    if "weather" in lowered:
        return Reply(tool="get_weather", arguments={"location": city, "unit": "celsius"})
    if "shell" in lowered:
        return Reply(tool="shell.exec", arguments={"command": "ls -la /"})
    return _echo(text)


def _reply_with_offered(
    offered: dict[str, dict[str, Any]], messages: list[dict[str, Any]], lowered: str, city: str, text: str
) -> Reply:
    for keyword, fits in (("weather", "weather"), ("shell", "shell"), ("refund", "refund"), ("invoice", "invoice")):
        if keyword in lowered:
            name = next((n for n in offered if fits in n.lower()), None)
            if name is not None:
                return Reply(tool=name, arguments=_arguments_for(offered[name], city, text))
    named = next((n for n in offered if _mentions(lowered, n)), None)
    if named is not None and not any(m.get("role") == "tool" for m in messages):
        return Reply(tool=named, arguments=_arguments_for(offered[named], city, text))
    handoff = next((n for n in offered if n.startswith("transfer_to_")), None)
    if handoff is not None and any(m.get("role") == "tool" for m in messages):
        handoff = None  # already handed off once: answer instead of bouncing on
    if handoff is not None:
        return Reply(tool=handoff, arguments={})
    return _echo(text)


def _mentions(lowered: str, tool: str) -> bool:
    """Whether the message uses a word of the tool's name (``lookup_order``: "order"); short words don't count."""
    words = re.split(r"[^a-z]+", tool.lower())
    return any(len(word) >= 4 and re.search(rf"\b{word}", lowered) for word in words)


def _arguments_for(function: dict[str, Any], city: str, text: str) -> dict[str, Any]:
    """Fill the tool's required parameters: places get the city, invoices and ids a number, queries the text."""
    invoice = _INVOICE.search(text)
    number = _NUMBER.search(text)
    schema = function.get("parameters") or {}
    properties: dict[str, Any] = schema.get("properties") or {}
    samples = {"string": "demo", "number": 21.0, "integer": 1, "boolean": False}
    arguments: dict[str, Any] = {}
    for name in schema.get("required") or list(properties):
        kind = (properties.get(name) or {}).get("type", "string")
        place = any(word in name.lower() for word in ("city", "location", "place"))
        if place:
            arguments[name] = city
        elif "invoice" in name.lower() and invoice:
            arguments[name] = invoice.group(0).upper()
        elif name.lower().endswith("id") and number:
            arguments[name] = number.group(0) if kind == "string" else int(number.group(0))
        elif name.lower() in _QUERY_PARAMETERS:
            arguments[name] = text
        else:
            arguments[name] = samples.get(kind, "demo")
    return arguments


def _is_handoff_result(message: dict[str, Any]) -> bool:
    """The Agents SDK answers a transfer_to_* call with {"assistant": "<agent>"}."""
    try:
        return "assistant" in json.loads(_text(message))
    except (ValueError, TypeError):
        return False


def _echo(text: str) -> Reply:
    return Reply(f"You said: {text}" if text else "Hello from the celgate demo model.")


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text(message)
    return ""


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def responses_messages(items: Any) -> list[dict[str, Any]]:
    """A Responses ``input`` (a string or a list of items) as chat messages, so ``demo_reply`` answers both APIs."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages: list[dict[str, Any]] = []
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            messages.append({"role": item.get("role", "user"), "content": item.get("content")})
        elif kind == "function_call":
            function = {"name": item.get("name"), "arguments": item.get("arguments")}
            call = {"id": item.get("call_id"), "type": "function", "function": function}
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(kind, str) and kind.endswith("_call_output"):
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": item.get("output")})
    return messages


_STORED_MAX = 256  # responses kept for GET /v1/responses/{id} and follow-ups; the oldest is dropped first
_JSON = "application/json"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


@dataclass(frozen=True, slots=True)
class _Stored:
    """A response as a client reads it back, and its conversation as chat messages, for a follow-up turn."""

    response: dict[str, Any]
    conversation: list[dict[str, Any]]


class DemoServer:
    """Runs the demo app on 127.0.0.1:<free port> inside the current event loop."""

    def __init__(self, delay_ms: int) -> None:
        self._delay = delay_ms / 1000
        self._runner: web.AppRunner | None = None
        self._stored: dict[str, _Stored] = {}
        self.base_url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_get("/v1/responses/{id}", self._retrieve)
        app.router.add_delete("/v1/responses/{id}", self._delete)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _models(self, request: web.Request) -> web.Response:
        model = {"id": MODEL, "object": "model", "created": 0, "owned_by": "celgate-demo"}
        return web.json_response({"object": "list", "data": [model]})

    # --- chat completions --------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        reply = demo_reply(body.get("messages") or [], body.get("tools"))
        completion_id = f"chatcmpl-demo{int(time.time() * 1000)}"
        base = {"id": completion_id, "created": int(time.time()), "model": body.get("model", MODEL)}
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(request, base, reply, usage)
        choice = _message_choice(reply)
        return web.json_response({**base, "object": "chat.completion", "choices": [choice], "usage": _usage(reply)})

    async def _stream(
        self, request: web.Request, base: dict[str, Any], reply: Reply, usage: bool
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        for delta, finish in _deltas(reply):
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            await response.write(data_event({**base, "object": "chat.completion.chunk", "choices": [choice]}))
            await asyncio.sleep(self._delay)
        if usage:
            chunk = {**base, "object": "chat.completion.chunk", "choices": [], "usage": _usage(reply)}
            await response.write(data_event(chunk))
        await response.write(DONE_EVENT)
        return response

    # --- the Responses API -------------------------------------------------------------------------

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.")
        history: list[dict[str, Any]] = []
        previous = body.get("previous_response_id")
        new = responses_messages(body.get("input"))
        if previous is not None:
            stored = self._stored.get(previous) if isinstance(previous, str) else None
            if stored is None:
                return _error(
                    400,
                    f"Previous response with id '{previous}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            unanswered = _unanswered_call(stored.response, body.get("input"))
            if unanswered is not None:
                return _error(400, f"No tool output found for function call {unanswered}.", param="input")
            history = stored.conversation
        instructions = body.get("instructions")
        system = [{"role": "system", "content": instructions}] if isinstance(instructions, str) else []
        reply = demo_reply([*system, *history, *new], _chat_tools(body.get("tools")))
        item = _output_item(reply)
        response = _response_object(body, [item], _responses_usage(reply))
        if body.get("store") is not False:
            self._keep(response, [*history, *new, *responses_messages([item])])
        if not body.get("stream"):
            return _json(response)
        out = web.StreamResponse(headers=_SSE_HEADERS)
        await out.prepare(request)
        for number, (kind, fields, delta) in enumerate(_response_events(response)):
            await out.write(named_event(kind, {"type": kind, "sequence_number": number, **fields}))
            if delta:
                await asyncio.sleep(self._delay)
        return out

    def _keep(self, response: dict[str, Any], conversation: list[dict[str, Any]]) -> None:
        """Store a response as the API does (``store`` defaults to true), bounded: the oldest goes first."""
        self._stored[response["id"]] = _Stored(response, conversation)
        while len(self._stored) > _STORED_MAX:
            del self._stored[next(iter(self._stored))]

    async def _retrieve(self, request: web.Request) -> web.Response:
        stored = self._stored.get(request.match_info["id"])
        if stored is None:
            return _error(404, f"Response with id '{request.match_info['id']}' not found.")
        if request.query.get("stream") == "true":
            return _error(
                400, "This response cannot be streamed because it was not created with background=true.", param="stream"
            )
        return _json(stored.response)

    async def _delete(self, request: web.Request) -> web.Response:
        response_id = request.match_info["id"]
        if self._stored.pop(response_id, None) is None:
            return _error(404, f"Response with id '{response_id}' not found.")
        return _json({"id": response_id, "object": "response", "deleted": True})


def _deltas(reply: Reply) -> list[tuple[dict[str, Any], str | None]]:
    if reply.tool is None:
        deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": ""}, None)]
        deltas += [({"content": word}, None) for word in _words(reply.text)]
        return [*deltas, ({}, "stop")]
    first, second = _halves(json.dumps(reply.arguments))
    call = {"index": 0, "id": reply.call_id, "type": "function", "function": {"name": reply.tool, "arguments": ""}}
    return [
        ({"role": "assistant", "content": None, "tool_calls": [call]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": first}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": second}}]}, None),
        ({}, "tool_calls"),
    ]


def _words(text: str) -> list[str]:
    """The text deltas a model streams: word by word, the space before a word sent with it."""
    return [word if i == 0 else " " + word for i, word in enumerate(text.split(" "))]


def _halves(arguments: str) -> tuple[str, str]:
    """Arguments in two deltas, so a reader must join them (as it must for a real model)."""
    half = len(arguments) // 2
    return arguments[:half], arguments[half:]


def _message_choice(reply: Reply) -> dict[str, Any]:
    if reply.tool is None:
        return {"index": 0, "message": {"role": "assistant", "content": reply.text}, "finish_reason": "stop"}
    function = {"name": reply.tool, "arguments": json.dumps(reply.arguments)}
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": reply.call_id, "type": "function", "function": function}],
    }
    return {"index": 0, "message": message, "finish_reason": "tool_calls"}


def _usage(reply: Reply) -> dict[str, int]:
    completion = _output_tokens(reply)
    return {"prompt_tokens": 10, "completion_tokens": completion, "total_tokens": 10 + completion}


def _output_tokens(reply: Reply) -> int:
    return max(1, len(reply.text.split())) if reply.tool is None else 12


# --- Responses wire format: objects and events as the API sends them ------------------------------


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(text=compact_json(value), status=status, content_type=_JSON)


def _error(status: int, message: str, *, param: str | None = None, code: str | None = None) -> web.Response:
    """An error exactly in the API's shape, so the openai client raises its usual exception."""
    return _json({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}, status)


def _new_id(prefix: str) -> str:
    """An id shaped like the API's (``resp_`` + 50 hex digits); unique, so stored responses never collide."""
    return f"{prefix}_{secrets.token_hex(25)}"


def _chat_tools(tools: Any) -> list[dict[str, Any]] | None:
    """The function tools of a Responses request (``{"type": "function", "name": ...}``) in chat form."""
    if not isinstance(tools, list):
        return None
    return [
        {"type": "function", "function": {"name": tool["name"], "parameters": tool.get("parameters") or {}}}
        for tool in tools
        if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("name"), str)
    ]


def _unanswered_call(previous: dict[str, Any], items: Any) -> str | None:
    """The call id of a function call of ``previous`` that ``items`` leave unanswered (the API refuses those)."""
    answered = (
        {item.get("call_id") for item in items if isinstance(item, dict) and item.get("type") == "function_call_output"}
        if isinstance(items, list)
        else set()
    )
    for item in previous["output"]:
        if item["type"] == "function_call" and item["call_id"] not in answered:
            return str(item["call_id"])
    return None


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _output_item(reply: Reply) -> dict[str, Any]:
    if reply.tool is None:
        return {
            "id": _new_id("msg"),
            "type": "message",
            "status": "completed",
            "content": [_text_part(reply.text)],
            "role": "assistant",
        }
    return {
        "id": _new_id("fc"),
        "type": "function_call",
        "status": "completed",
        "arguments": compact_json(reply.arguments),
        "call_id": reply.call_id,
        "name": reply.tool,
    }


def _responses_usage(reply: Reply) -> dict[str, Any]:
    output = _output_tokens(reply)
    return {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 10 + output,
    }


def _echoed_tool(tool: Any) -> Any:
    """A request tool as the API echoes it: function tools get ``description``, ``parameters`` and ``strict``."""
    if not isinstance(tool, dict) or tool.get("type") != "function":
        return tool
    return {"description": None, "parameters": None, "strict": True, **tool}


def _response_object(body: dict[str, Any], output: list[dict[str, Any]], usage: dict[str, Any]) -> dict[str, Any]:
    """A completed ``response`` with every top-level field the API sends, in its order, echoing the request."""

    def given(key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        """The request's value if well-typed (a bool is no number here), else the API's default."""
        value = body.get(key)
        if kind is bool:
            return value if isinstance(value, bool) else default
        return value if isinstance(value, kind) and not isinstance(value, bool) else default

    created = int(time.time())
    model = body.get("model")
    tools = body.get("tools")
    return {
        "id": _new_id("resp"),
        "object": "response",
        "created_at": created,
        "status": "completed",
        "background": False,
        "completed_at": created,
        "error": None,
        "incomplete_details": None,
        "instructions": given("instructions", (str, list), None),
        "max_output_tokens": given("max_output_tokens", int, None),
        "max_tool_calls": given("max_tool_calls", int, None),
        "model": model if isinstance(model, str) else MODEL,
        "output": output,
        "parallel_tool_calls": given("parallel_tool_calls", bool, True),
        "previous_response_id": given("previous_response_id", str, None),
        "prompt_cache_key": None,
        "prompt_cache_retention": None,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": None,
        "service_tier": "default",
        "store": given("store", bool, True),
        "temperature": given("temperature", (int, float), 1.0),
        "text": given("text", dict, {"format": {"type": "text"}, "verbosity": "medium"}),
        "tool_choice": given("tool_choice", (str, dict), "auto"),
        "tools": [_echoed_tool(tool) for tool in tools] if isinstance(tools, list) else [],
        "top_logprobs": 0,
        "top_p": given("top_p", (int, float), 1.0),
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": given("metadata", dict, {}),
    }


def _response_events(final: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """The stream of ``final``: (type, fields, is a delta); numbered by the writer, so numbers rise by one."""
    pending = {
        **final,
        "status": "in_progress",
        "completed_at": None,
        "output": [],
        "usage": None,
        "service_tier": "auto",
    }
    yield "response.created", {"response": pending}, False
    yield "response.in_progress", {"response": pending}, False
    for index, item in enumerate(final["output"]):
        yield from _item_events(index, item)
    yield "response.completed", {"response": final}, False


def _item_events(index: int, item: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """One output item's events: added, its deltas and ``.done``, then done (the API's order per item type)."""
    at = {"item_id": item["id"], "output_index": index}
    if item["type"] == "message":
        yield (
            "response.output_item.added",
            {"output_index": index, "item": {**item, "status": "in_progress", "content": []}},
            False,
        )
        part = item["content"][0]
        text = {**at, "content_index": 0}
        yield "response.content_part.added", {**text, "part": {**part, "text": ""}}, False
        for word in _words(part["text"]):
            yield "response.output_text.delta", {**text, "delta": word, "logprobs": []}, True
        yield "response.output_text.done", {**text, "text": part["text"], "logprobs": []}, False
        yield "response.content_part.done", {**text, "part": part}, False
    else:
        yield (
            "response.output_item.added",
            {"output_index": index, "item": {**item, "status": "in_progress", "arguments": ""}},
            False,
        )
        for piece in _halves(item["arguments"]):
            yield "response.function_call_arguments.delta", {**at, "delta": piece}, True
        yield "response.function_call_arguments.done", {**at, "arguments": item["arguments"]}, False
    yield "response.output_item.done", {"output_index": index, "item": item}, False
