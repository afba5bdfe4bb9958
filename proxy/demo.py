"""The built-in demo model behind ``--upstream demo``: a real OpenAI-compatible server.

It listens on a loopback port beside the proxy, so the proxy path is exactly
the production one, and needs no key and no network. Answers are
deterministic: a message mentioning the weather gets a ``get_weather`` tool
call, one mentioning a shell gets a ``shell.exec`` call, a tool result gets a
sentence using it, anything else an echo streamed word by word. When the
request offers tools (as an agent's model call does), the demo calls the
offered tool whose name fits the message (``get_weather`` for weather,
``shell*`` for a shell, ``transfer_to_*`` to hand off), with arguments made
from the tool's JSON schema.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .sse import DONE_EVENT, data_event

__all__ = ["DemoServer", "demo_reply"]

MODEL = "demo"
_INVOICE = re.compile(r"\bINV-\d+\b", re.IGNORECASE)
_CITY = re.compile(r"\b(?:in|for|at)\s+([A-Z][\w .'-]*?)(?:[?.!,]|$)")


@dataclass(frozen=True, slots=True)
class Reply:
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
    handoff = next((n for n in offered if n.startswith("transfer_to_")), None)
    if handoff is not None and any(m.get("role") == "tool" for m in messages):
        handoff = None  # already handed off once: answer instead of bouncing on
    if handoff is not None:
        return Reply(tool=handoff, arguments={})
    return _echo(text)


def _arguments_for(function: dict[str, Any], city: str, text: str) -> dict[str, Any]:
    """Fill the tool's required parameters: places get the city, invoices the id, others a sample."""
    invoice = _INVOICE.search(text)
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


class DemoServer:
    """Runs the demo app on 127.0.0.1:<free port> inside the current event loop."""

    def __init__(self, delay_ms: int) -> None:
        self._delay = delay_ms / 1000
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
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
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "celgate-demo"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        reply = demo_reply(body.get("messages") or [], body.get("tools"))
        completion_id = f"chatcmpl-demo{int(time.time() * 1000)}"
        base = {"id": completion_id, "created": int(time.time()), "model": body.get("model", MODEL)}
        if body.get("stream"):
            return await self._stream(request, base, reply, bool((body.get("stream_options") or {}).get("include_usage")))
        return web.json_response({**base, "object": "chat.completion", "choices": [_message_choice(reply)], "usage": _usage(reply)})

    async def _stream(self, request: web.Request, base: dict[str, Any], reply: Reply, usage: bool) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        for delta, finish in _deltas(reply):
            chunk = {**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await response.write(data_event(chunk))
            await asyncio.sleep(self._delay)
        if usage:
            chunk = {**base, "object": "chat.completion.chunk", "choices": [], "usage": _usage(reply)}
            await response.write(data_event(chunk))
        await response.write(DONE_EVENT)
        return response


def _deltas(reply: Reply) -> list[tuple[dict[str, Any], str | None]]:
    if reply.tool is None:
        words = reply.text.split(" ")
        deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": ""}, None)]
        deltas += [({"content": w if i == 0 else " " + w}, None) for i, w in enumerate(words)]
        return [*deltas, ({}, "stop")]
    arguments = json.dumps(reply.arguments)
    half = len(arguments) // 2
    call = {"index": 0, "id": reply.call_id, "type": "function", "function": {"name": reply.tool, "arguments": ""}}
    return [
        ({"role": "assistant", "content": None, "tool_calls": [call]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": arguments[:half]}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]}, None),
        ({}, "tool_calls"),
    ]


def _message_choice(reply: Reply) -> dict[str, Any]:
    if reply.tool is None:
        return {"index": 0, "message": {"role": "assistant", "content": reply.text}, "finish_reason": "stop"}
    call = {"id": reply.call_id, "type": "function", "function": {"name": reply.tool, "arguments": json.dumps(reply.arguments)}}
    return {"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]}, "finish_reason": "tool_calls"}


def _usage(reply: Reply) -> dict[str, int]:
    completion = max(1, len(reply.text.split())) if reply.tool is None else 12
    return {"prompt_tokens": 10, "completion_tokens": completion, "total_tokens": 10 + completion}
