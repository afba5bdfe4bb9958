"""The OpenAI Responses API wire format, built the way the real API sends it.

celgate rewrites Responses traffic (``POST /v1/responses``, streamed or not,
``GET /v1/responses/{id}`` and ``/input_items``), so its tests need upstream
answers that real clients accept byte for byte: every field the API sends
(``null`` included), compact JSON in the API's key order, ``event:`` + ``data:``
SSE frames without a ``[DONE]`` trailer, strictly consecutive
``sequence_number``s from 0, and the exact event sequence per output item.
``tests/helpers/test_responses_wire.py`` checks all of it against the installed
``openai`` package's pydantic types and its stream helpers.

Builders return plain dicts (what a test sends or compares); ``response_events``
gives the stream as event dicts, ``response_stream`` as SSE frames and
``responses_steps`` as ``fakeupstream.Step``s. ``stream_events`` and
``check_stream`` read a stream back and check it is well-formed, so a test can
assert that what celgate sends on is still a valid Responses stream.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import secrets
import string
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tests.helpers.fakeupstream import Step

__all__ = [
    "CALL_OUTPUT_TYPES",
    "CALL_WORDS",
    "DEFAULT_MODEL",
    "MESSAGE_EVENT_TYPES",
    "Item",
    "SSEFrame",
    "apply_patch_call_item",
    "check_stream",
    "computer_call_item",
    "custom_tool_call_item",
    "error_event",
    "frame",
    "function_call_item",
    "input_items",
    "local_shell_call_item",
    "mcp_call_item",
    "message_item",
    "new_call_id",
    "new_id",
    "openai_error",
    "output_text_part",
    "parse_sse",
    "reasoning_item",
    "refusal_part",
    "request_fields",
    "response_events",
    "response_object",
    "response_stream",
    "response_usage",
    "responses_steps",
    "shell_call_item",
    "stream_events",
    "tool_output",
    "web_search_call_item",
]

Item = dict[str, Any]
"""One output (or input) item as JSON: kept a plain dict so tests can edit and compare it."""

ResponseStatus = Literal["completed", "incomplete", "failed", "in_progress", "queued", "cancelled"]

DEFAULT_MODEL = "fake-model"  # what fakeupstream's chat answers name too

# Every event type of a streamed response whose output is one text message.
MESSAGE_EVENT_TYPES = frozenset(
    {
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    }
)

CALL_OUTPUT_TYPES: dict[str, str] = {
    "function_call": "function_call_output",
    "custom_tool_call": "custom_tool_call_output",
    "local_shell_call": "local_shell_call_output",
    "shell_call": "shell_call_output",
    "apply_patch_call": "apply_patch_call_output",
    "computer_call": "computer_call_output",
}
"""Client-executed call item types and the input item type that answers each.

The API refuses to continue (``previous_response_id``) until every such call
has its output; server-side items (``web_search_call``, ``mcp_call``) need none.
"""

CALL_WORDS: dict[str, str] = {
    "function_call": "function call",
    "custom_tool_call": "custom tool call",
    "local_shell_call": "local shell call",
    "shell_call": "shell call",
    "apply_patch_call": "apply patch call",
    "computer_call": "computer call",
}
"""How error messages name each call type (only the ``function call`` wording is confirmed from the real API)."""

_ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
    "local_shell_call": "lsh",
    "local_shell_call_output": "lsho",
    "shell_call": "sh",
    "shell_call_output": "sho",
    "apply_patch_call": "apc",
    "apply_patch_call_output": "apco",
    "computer_call": "cu",
    "computer_call_output": "cuo",
    "reasoning": "rs",
    "web_search_call": "ws",
    "mcp_call": "mcp",
    "mcp_approval_response": "mcpr",
}

_ALNUM = string.ascii_letters + string.digits

# A 1x1 transparent PNG: the smallest screenshot a computer_call_output can carry.
_PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def new_id(prefix: str) -> str:
    """A fresh id shaped like the API's (``resp_`` + 50 hex digits): unique, so stored responses never collide."""
    return f"{prefix}_{secrets.token_hex(25)}"


def new_call_id() -> str:
    """A fresh ``call_`` id, 24 alphanumerics as the API makes them."""
    return "call_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


def _item_id(kind: str) -> str:
    return new_id(_ID_PREFIX.get(kind, "item"))


# --- items -------------------------------------------------------------------------------------


def output_text_part(text: str, *, annotations: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """An ``output_text`` content part; the API always sends ``annotations`` and ``logprobs``, even empty."""
    return {"type": "output_text", "annotations": [dict(a) for a in annotations], "logprobs": [], "text": text}


def refusal_part(refusal: str) -> dict[str, Any]:
    """A ``refusal`` content part (streamed as ``response.refusal.delta/.done``)."""
    return {"type": "refusal", "refusal": refusal}


def message_item(
    text: str | Sequence[str | Mapping[str, Any]] = "Hello world",
    *,
    id: str | None = None,
    status: Literal["completed", "incomplete", "in_progress"] = "completed",
    phase: Literal["commentary", "final_answer"] | None = None,
) -> Item:
    """An assistant ``message``: one ``output_text`` part per string, or the given parts as they are."""
    texts = [text] if isinstance(text, str) else list(text)
    content = [output_text_part(t) if isinstance(t, str) else dict(t) for t in texts]
    item: Item = {
        "id": id or _item_id("message"),
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }
    if phase is not None:
        item["phase"] = phase
    return item


def function_call_item(
    call_id: str | None = None,
    name: str = "get_weather",
    arguments: str = '{"city":"Paris"}',
    *,
    id: str | None = None,
    status: Literal["completed", "incomplete", "in_progress"] = "completed",
    namespace: str | None = None,
) -> Item:
    """A ``function_call`` the client must execute and answer with a ``function_call_output``."""
    item: Item = {
        "id": id or _item_id("function_call"),
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id or new_call_id(),
        "name": name,
    }
    if namespace is not None:
        item["namespace"] = namespace
    return item


def custom_tool_call_item(
    call_id: str | None = None,
    name: str = "code_exec",
    input: str = 'print("hello world")',
    *,
    id: str | None = None,
    status: Literal["completed", "incomplete", "in_progress"] = "completed",
) -> Item:
    """A ``custom_tool_call`` (free-form input, streamed as ``response.custom_tool_call_input.*``)."""
    return {
        "id": id or _item_id("custom_tool_call"),
        "type": "custom_tool_call",
        "status": status,
        "call_id": call_id or new_call_id(),
        "input": input,
        "name": name,
    }


def local_shell_call_item(
    call_id: str | None = None,
    command: Sequence[str] = ("ls", "-la"),
    *,
    id: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout_ms: int | None = None,
    working_directory: str | None = None,
    user: str | None = None,
    status: Literal["completed", "incomplete", "in_progress"] = "completed",
) -> Item:
    """A ``local_shell_call`` (Codex's local shell tool): an argv the client runs."""
    return {
        "id": id or _item_id("local_shell_call"),
        "type": "local_shell_call",
        "status": status,
        "call_id": call_id or new_call_id(),
        "action": {
            "type": "exec",
            "command": list(command),
            "env": dict(env or {}),
            "timeout_ms": timeout_ms,
            "user": user,
            "working_directory": working_directory,
        },
    }


def shell_call_item(
    call_id: str | None = None,
    commands: Sequence[str] = ("ls -la",),
    *,
    id: str | None = None,
    timeout_ms: int | None = None,
    max_output_length: int | None = None,
    status: Literal["completed", "incomplete", "in_progress"] = "completed",
) -> Item:
    """A ``shell_call`` (the hosted-model shell tool): shell command lines the client runs."""
    return {
        "id": id or _item_id("shell_call"),
        "type": "shell_call",
        "status": status,
        "call_id": call_id or new_call_id(),
        "action": {"commands": list(commands), "timeout_ms": timeout_ms, "max_output_length": max_output_length},
    }


def apply_patch_call_item(
    call_id: str | None = None,
    path: str = "README.md",
    diff: str | None = "@@\n-old\n+new\n",
    *,
    operation: Literal["create_file", "update_file", "delete_file"] = "update_file",
    id: str | None = None,
    status: Literal["completed", "in_progress"] = "completed",
) -> Item:
    """An ``apply_patch_call``: one file operation (``delete_file`` carries no diff)."""
    op: dict[str, Any] = {"type": operation, "path": path}
    if operation != "delete_file":
        op["diff"] = diff or ""
    return {
        "id": id or _item_id("apply_patch_call"),
        "type": "apply_patch_call",
        "status": status,
        "call_id": call_id or new_call_id(),
        "operation": op,
    }


def computer_call_item(
    call_id: str | None = None,
    action: Mapping[str, Any] | None = None,
    *,
    id: str | None = None,
    pending_safety_checks: Sequence[Mapping[str, Any]] = (),
    status: Literal["completed", "incomplete", "in_progress"] = "completed",
) -> Item:
    """A ``computer_call``: one UI action (default a left click) the client performs and screenshots."""
    return {
        "id": id or _item_id("computer_call"),
        "type": "computer_call",
        "status": status,
        "action": dict(action or {"type": "click", "button": "left", "x": 100, "y": 200}),
        "call_id": call_id or new_call_id(),
        "pending_safety_checks": [dict(c) for c in pending_safety_checks],
    }


def reasoning_item(
    summary: Sequence[str] = (),
    *,
    id: str | None = None,
    encrypted_content: str | None = None,
    content: Sequence[str] | None = None,
) -> Item:
    """A ``reasoning`` item; its summary parts stream as ``response.reasoning_summary_*`` events."""
    item: Item = {
        "id": id or _item_id("reasoning"),
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": s} for s in summary],
    }
    if content is not None:
        item["content"] = [{"type": "reasoning_text", "text": c} for c in content]
    if encrypted_content is not None:
        item["encrypted_content"] = encrypted_content
    return item


def web_search_call_item(
    query: str = "weather in Paris",
    *,
    id: str | None = None,
    sources: Sequence[Mapping[str, Any]] | None = None,
    status: Literal["completed", "failed", "in_progress", "searching", "incomplete"] = "completed",
) -> Item:
    """A server-side ``web_search_call`` (no client output needed)."""
    action: dict[str, Any] = {"type": "search", "query": query}
    if sources is not None:
        action["sources"] = [dict(s) for s in sources]
    return {"id": id or _item_id("web_search_call"), "type": "web_search_call", "status": status, "action": action}


def mcp_call_item(
    server_label: str = "deepwiki",
    name: str = "ask_question",
    arguments: str = '{"question":"What is celgate?"}',
    *,
    output: str | None = "It is a proxy.",
    error: str | None = None,
    id: str | None = None,
    approval_request_id: str | None = None,
    status: Literal["completed", "failed", "in_progress", "calling", "incomplete"] | None = None,
) -> Item:
    """A server-side ``mcp_call`` (the API ran the remote MCP tool); ``error`` makes it a failed call."""
    failed = error is not None
    return {
        "id": id or _item_id("mcp_call"),
        "type": "mcp_call",
        "status": status or ("failed" if failed else "completed"),
        "approval_request_id": approval_request_id,
        "arguments": arguments,
        "error": {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": error}]} if failed else None,
        "name": name,
        "output": None if failed else output,
        "server_label": server_label,
    }


def tool_output(call: Mapping[str, Any], output: str = "ok") -> Item:
    """The input item that answers ``call`` (a call item of any ``CALL_OUTPUT_TYPES`` type), as clients send it."""
    kind = call["type"]
    if kind not in CALL_OUTPUT_TYPES:
        raise ValueError(f"{kind!r} is not a client-executed call item")
    call_id = call["call_id"]
    if kind in ("function_call", "custom_tool_call"):
        return {"type": CALL_OUTPUT_TYPES[kind], "call_id": call_id, "output": output}
    if kind == "local_shell_call":
        # The param type keys it by ``id``: "the unique ID of the local shell tool call generated by the model".
        return {"type": "local_shell_call_output", "id": call_id, "output": output}
    if kind == "shell_call":
        result = {"stdout": output, "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}
        return {"type": "shell_call_output", "call_id": call_id, "output": [result]}
    if kind == "apply_patch_call":
        return {"type": "apply_patch_call_output", "call_id": call_id, "status": "completed", "output": output}
    return {
        "type": "computer_call_output",
        "call_id": call_id,
        "output": {"type": "computer_screenshot", "image_url": _PIXEL},
    }


# --- responses ---------------------------------------------------------------------------------


def response_usage(
    input_tokens: int = 9, output_tokens: int = 5, *, cached_tokens: int = 0, reasoning_tokens: int = 0
) -> dict[str, Any]:
    """A ``usage`` object with every detail field the API sends (the openai types require ``cache_write_tokens``)."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }


def response_object(
    output: Sequence[Mapping[str, Any]] = (),
    *,
    id: str | None = None,
    status: ResponseStatus = "completed",
    model: str = DEFAULT_MODEL,
    usage: Mapping[str, Any] | Literal["auto"] | None = "auto",
    previous_response_id: str | None = None,
    created_at: int | None = None,
    instructions: str | Sequence[Mapping[str, Any]] | None = None,
    tools: Sequence[Mapping[str, Any]] = (),
    tool_choice: str | Mapping[str, Any] = "auto",
    parallel_tool_calls: bool = True,
    temperature: float | None = 1.0,
    top_p: float | None = 1.0,
    max_output_tokens: int | None = None,
    max_tool_calls: int | None = None,
    metadata: Mapping[str, str] | None = None,
    store: bool = True,
    text: Mapping[str, Any] | None = None,
    reasoning: Mapping[str, Any] | None = None,
    background: bool = False,
    service_tier: str = "default",
    incomplete_reason: str = "max_output_tokens",
    error: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``response`` object with every top-level field the API sends, in its order.

    ``usage="auto"`` gives a usage block for finished responses and ``null`` while in
    progress, as the API does; ``incomplete_reason`` and ``error`` fill in
    ``incomplete_details`` / ``error`` only for the matching status. ``extra`` adds
    or overrides fields (the API keeps adding some; clients must ignore unknown ones).
    """
    created = int(time.time()) if created_at is None else created_at
    finished = status in ("completed", "incomplete", "failed")
    if usage == "auto":
        usage = response_usage() if status in ("completed", "incomplete") else None
    body: dict[str, Any] = {
        "id": id or new_id("resp"),
        "object": "response",
        "created_at": created,
        "status": status,
        "background": background,
        "billing": {"payer": "developer"},
        "completed_at": created + 1 if status == "completed" else None,
        "error": dict(error or {"code": "server_error", "message": "The server had an error."})
        if status == "failed"
        else None,
        "incomplete_details": {"reason": incomplete_reason} if status == "incomplete" else None,
        "instructions": instructions
        if isinstance(instructions, str) or instructions is None
        else [dict(i) for i in instructions],
        "max_output_tokens": max_output_tokens,
        "max_tool_calls": max_tool_calls,
        "model": model,
        "output": [copy.deepcopy(dict(item)) for item in output],
        "parallel_tool_calls": parallel_tool_calls,
        "previous_response_id": previous_response_id,
        "prompt_cache_key": None,
        "prompt_cache_retention": None,
        "reasoning": dict(reasoning or {"effort": None, "summary": None}),
        "safety_identifier": None,
        "service_tier": service_tier if finished else "auto",
        "store": store,
        "temperature": temperature,
        "text": dict(text or {"format": {"type": "text"}, "verbosity": "medium"}),
        "tool_choice": tool_choice if isinstance(tool_choice, str) else dict(tool_choice),
        "tools": [dict(t) for t in tools],
        "top_logprobs": 0,
        "top_p": top_p,
        "truncation": "disabled",
        "usage": None if usage is None else dict(usage),
        "user": None,
        "metadata": dict(metadata or {}),
    }
    body.update(extra or {})
    return body


def _echo_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A request tool as the API echoes it: function tools get ``description`` and ``strict`` filled in."""
    echoed = dict(tool)
    if echoed.get("type") == "function":
        echoed.setdefault("description", None)
        echoed.setdefault("parameters", None)
        echoed.setdefault("strict", True)  # Responses function tools are strict unless the request says otherwise
    return echoed


def request_fields(body: Any) -> dict[str, Any]:
    """The ``response_object`` keyword arguments that echo a ``POST /v1/responses`` request, as the API echoes them."""
    if not isinstance(body, Mapping):
        return {}
    fields: dict[str, Any] = {}
    if isinstance(body.get("model"), str):
        fields["model"] = body["model"]
    for key in ("instructions", "previous_response_id", "max_output_tokens", "max_tool_calls", "temperature", "top_p"):
        if body.get(key) is not None:
            fields[key] = body[key]
    for key in ("parallel_tool_calls", "store", "background"):
        if isinstance(body.get(key), bool):
            fields[key] = body[key]
    for key in ("metadata", "text", "reasoning"):
        if isinstance(body.get(key), Mapping):
            fields[key] = body[key]
    if isinstance(body.get("tools"), list):
        fields["tools"] = [_echo_tool(t) for t in body["tools"] if isinstance(t, Mapping)]
    if isinstance(body.get("tool_choice"), (str, Mapping)):
        fields["tool_choice"] = body["tool_choice"]
    return fields


def input_items(body: Any, known: Mapping[str, Mapping[str, Any]] | None = None) -> list[Item]:
    """A request's ``input`` as ``GET /v1/responses/{id}/input_items`` lists it: every item with an id and a status.

    A bare string becomes one user message; shorthand messages get typed content
    parts; ``item_reference``s resolve through ``known`` (item id → stored item).
    """
    raw = body.get("input") if isinstance(body, Mapping) else None
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    items: list[Item] = []
    for entry in raw if isinstance(raw, list) else []:
        if not isinstance(entry, Mapping):
            continue
        item = copy.deepcopy(dict(entry))
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "item_reference" or (kind is None and "id" in item and known and item["id"] in known):
            if known and item.get("id") in known:
                items.append(copy.deepcopy(dict(known[item["id"]])))
            continue
        if kind == "message":
            item["type"] = "message"
            if isinstance(item.get("content"), str):
                part = "output_text" if item.get("role") == "assistant" else "input_text"
                item["content"] = [{"type": part, "text": item["content"]}]
        item.setdefault("id", _item_id(str(kind)))
        if kind != "reasoning":
            item.setdefault("status", "completed")
        items.append(item)
    return items


def openai_error(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """An error body exactly as the OpenAI API sends one: ``{"error": {message, type, param, code}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# --- streams -----------------------------------------------------------------------------------


def _split(text: str, pieces: int | None) -> list[str]:
    """``text`` as deltas: word-like tokens (leading space attached, as models stream) or ``pieces`` equal slices."""
    if not text:
        return []
    if pieces is None:
        return re.findall(r"\s*\S+|\s+$", text)
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _obfuscation(seq: int, delta: str) -> str:
    """The padding the API adds to delta events (``stream_options.include_obfuscation``), deterministic here."""
    digest = hashlib.sha256(f"{seq}:{delta}".encode()).hexdigest()
    return digest[: 16 - min(len(delta), 15)]


def _pending(item: Mapping[str, Any]) -> Item:
    """``item`` as ``response.output_item.added`` carries it: in progress, its streamed parts still empty."""
    added = copy.deepcopy(dict(item))
    kind = added["type"]
    if "status" in added:
        added["status"] = "in_progress"
    if kind == "message":
        added["content"] = []
    elif kind == "function_call":
        added["arguments"] = ""
    elif kind == "custom_tool_call":
        added["input"] = ""
    elif kind == "reasoning":
        added["summary"] = []
        if "content" in added:
            added["content"] = []
    elif kind == "mcp_call":
        added.update(arguments="", output=None, error=None)
    return added


class _Events:
    """Numbers events as the API does: consecutive ``sequence_number`` from 0, ``type`` first."""

    def __init__(self, obfuscation: bool) -> None:
        self.events: list[dict[str, Any]] = []
        self.obfuscation = obfuscation

    def add(self, type: str, **fields: Any) -> None:
        event: dict[str, Any] = {"type": type, "sequence_number": len(self.events), **fields}
        if self.obfuscation and type.endswith(".delta") and isinstance(fields.get("delta"), str):
            event["obfuscation"] = _obfuscation(event["sequence_number"], fields["delta"])
        self.events.append(event)


def _item_events(
    out: _Events,
    index: int,
    item: Mapping[str, Any],
    split_arguments: int,
    text_deltas: int | None,
    shell_command_events: bool,
) -> None:
    kind = item["type"]
    item_id = item.get("id")
    at = {"item_id": item_id, "output_index": index}
    out.add("response.output_item.added", output_index=index, item=_pending(item))
    if kind == "message":
        for c, part in enumerate(item.get("content", [])):
            part = dict(part)
            if part.get("type") == "refusal":
                out.add("response.content_part.added", **at, content_index=c, part={"type": "refusal", "refusal": ""})
                for delta in _split(part["refusal"], text_deltas):
                    out.add("response.refusal.delta", **at, content_index=c, delta=delta)
                out.add("response.refusal.done", **at, content_index=c, refusal=part["refusal"])
            else:
                out.add(
                    "response.content_part.added", **at, content_index=c, part={**part, "annotations": [], "text": ""}
                )
                for delta in _split(part.get("text", ""), text_deltas):
                    out.add("response.output_text.delta", **at, content_index=c, delta=delta, logprobs=[])
                out.add("response.output_text.done", **at, content_index=c, text=part.get("text", ""), logprobs=[])
                for a, annotation in enumerate(part.get("annotations", [])):
                    out.add(
                        "response.output_text.annotation.added",
                        **at,
                        content_index=c,
                        annotation_index=a,
                        annotation=annotation,
                    )
            out.add("response.content_part.done", **at, content_index=c, part=part)
    elif kind == "function_call":
        for delta in _split(item["arguments"], split_arguments):
            out.add("response.function_call_arguments.delta", **at, delta=delta)
        out.add("response.function_call_arguments.done", **at, arguments=item["arguments"])
    elif kind == "custom_tool_call":
        for delta in _split(item["input"], split_arguments):
            out.add("response.custom_tool_call_input.delta", **at, delta=delta)
        out.add("response.custom_tool_call_input.done", **at, input=item["input"])
    elif kind == "reasoning":
        for s, part in enumerate(item.get("summary", [])):
            out.add(
                "response.reasoning_summary_part.added",
                **at,
                summary_index=s,
                part={"type": "summary_text", "text": ""},
            )
            for delta in _split(part["text"], text_deltas):
                out.add("response.reasoning_summary_text.delta", **at, summary_index=s, delta=delta)
            out.add("response.reasoning_summary_text.done", **at, summary_index=s, text=part["text"])
            out.add("response.reasoning_summary_part.done", **at, summary_index=s, part=dict(part))
    elif kind == "web_search_call":
        out.add("response.web_search_call.in_progress", output_index=index, item_id=item_id)
        out.add("response.web_search_call.searching", output_index=index, item_id=item_id)
        out.add("response.web_search_call.completed", output_index=index, item_id=item_id)
    elif kind == "mcp_call":
        out.add("response.mcp_call.in_progress", output_index=index, item_id=item_id)
        for delta in _split(item["arguments"], split_arguments):
            out.add("response.mcp_call_arguments.delta", **at, delta=delta)
        out.add("response.mcp_call_arguments.done", **at, arguments=item["arguments"])
        failed = item.get("status") == "failed"
        out.add(
            "response.mcp_call.failed" if failed else "response.mcp_call.completed", output_index=index, item_id=item_id
        )
    elif kind == "shell_call" and shell_command_events:
        for n, command in enumerate(item["action"]["commands"]):
            out.add("response.shell_call_command.added", output_index=index, command_index=n, command="")
            for delta in _split(command, split_arguments):
                out.add("response.shell_call_command.delta", output_index=index, command_index=n, delta=delta)
            out.add("response.shell_call_command.done", output_index=index, command_index=n, command=command)
    out.add("response.output_item.done", output_index=index, item=copy.deepcopy(dict(item)))


def response_events(
    output: Sequence[Mapping[str, Any]] = (),
    *,
    split_arguments: int = 3,
    text_deltas: int | None = None,
    obfuscation: bool = True,
    shell_command_events: bool = False,
    in_progress: bool = True,
    **response: Any,
) -> list[dict[str, Any]]:
    """The events the API streams for a response with ``output``, as dicts (``response_object`` kwargs in ``response``).

    ``response.created`` and ``response.in_progress`` carry the in-progress snapshot
    (empty output, null usage); each item is added, streamed and done in turn; the
    last event (``response.completed``, ``.incomplete`` or ``.failed`` by
    ``status``) carries the full snapshot, the same as ``response_object`` with the
    same arguments. Arguments and custom-tool input stream in ``split_arguments``
    pieces, text in word tokens unless ``text_deltas`` gives a piece count.
    ``in_progress=False`` leaves out ``response.in_progress`` (the API sends it, a proxy
    might not). ``obfuscation`` adds the API's padding field to delta events; the
    ``response.shell_call_command.*`` events are opt-in because openai-node 6's
    stream helper throws on event types it does not know.
    """
    status = response.get("status", "completed")
    response.setdefault("id", new_id("resp"))
    response.setdefault("created_at", int(time.time()))
    final = response_object(output, **response)
    pending = response_object((), **{**response, "status": "in_progress", "usage": None})
    out = _Events(obfuscation)
    out.add("response.created", response=pending)
    if in_progress:
        out.add("response.in_progress", response=copy.deepcopy(pending))
    for index, item in enumerate(final["output"]):
        _item_events(out, index, item, split_arguments, text_deltas, shell_command_events)
    terminal = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed"}
    if status not in terminal:
        raise ValueError(f"a stream ends completed, incomplete or failed, not {status!r}")
    out.add(terminal[status], response=final)
    return out.events


def frame(event: Mapping[str, Any]) -> bytes:
    """One SSE frame exactly as the API writes it: ``event: <type>``, compact JSON ``data:``, blank line."""
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()


def response_stream(output: Sequence[Mapping[str, Any]] = (), **kwargs: Any) -> list[bytes]:
    """``response_events`` framed as SSE: the exact bytes of a streamed ``POST /v1/responses`` body (no ``[DONE]``)."""
    return [frame(e) for e in response_events(output, **kwargs)]


def error_event(
    message: str, *, code: str | None = None, param: str | None = None, sequence_number: int = 0
) -> dict[str, Any]:
    """An ``error`` stream event in the spec's shape (top-level ``code``, ``message``, ``param``)."""
    return {"type": "error", "sequence_number": sequence_number, "code": code, "message": message, "param": param}


def responses_steps(
    output: Sequence[Mapping[str, Any]] = (),
    *,
    delay: float = 0.0,
    first_delay: float = 0.0,
    split_bytes: int = 0,
    **kwargs: Any,
) -> list[Step]:
    """``response_stream`` as ``fakeupstream.Step``s: ``delay`` before each frame (``first_delay`` before the first).

    ``split_bytes`` > 0 writes each frame in chunks of that many bytes, so a
    reader must reassemble SSE frames across TCP writes.
    """
    from tests.helpers.fakeupstream import Step

    steps: list[Step] = []
    for n, data in enumerate(response_stream(output, **kwargs)):
        wait = first_delay if n == 0 else delay
        chunks = [data[i : i + split_bytes] for i in range(0, len(data), split_bytes)] if split_bytes > 0 else [data]
        steps.extend(Step(chunk, delay=wait if c == 0 else 0.0) for c, chunk in enumerate(chunks))
    return steps


# --- reading streams back ----------------------------------------------------------------------


@dataclass
class SSEFrame:
    """One server-sent event: its ``event:`` name (``None`` if absent) and its joined ``data:`` lines."""

    event: str | None
    data: str


def parse_sse(body: bytes | str) -> list[SSEFrame]:
    """Split an SSE body into frames (LF, CRLF or CR line ends; ``:`` comments ignored), as the spec reads it."""
    text = body.decode() if isinstance(body, bytes) else body
    frames: list[SSEFrame] = []
    event: str | None = None
    data: list[str] = []
    for line in re.split(r"\r\n|\r|\n", text):
        if not line:
            if data or event is not None:
                frames.append(SSEFrame(event, "\n".join(data)))
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if data:
        frames.append(SSEFrame(event, "\n".join(data)))
    return frames


def stream_events(body: bytes | str | Iterable[bytes]) -> list[dict[str, Any]]:
    """The JSON events of a Responses SSE body (frames joined first); asserts each frame's ``event:`` names its type."""
    if not isinstance(body, (bytes, str)):
        body = b"".join(body)
    events: list[dict[str, Any]] = []
    for sse in parse_sse(body):
        event = json.loads(sse.data)
        assert sse.event in (None, event.get("type")), (
            f"SSE event {sse.event!r} carries data of type {event.get('type')!r}"
        )
        events.append(event)
    return events


_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def check_stream(events: Sequence[Mapping[str, Any]] | bytes | str, *, consecutive: bool = True) -> dict[str, Any]:
    """Assert ``events`` form a well-formed Responses stream and return its final response.

    Each event validates against the openai package's ``ResponseStreamEvent``
    union; ``sequence_number``s rise (consecutively from 0 unless ``consecutive`` is
    false, for streams a proxy thinned out); the stream opens with
    ``response.created`` and ends with exactly one terminal event; every item is
    added before it streams and done once; deltas add up to what ``.done`` says;
    and the final snapshot's output is the done items, in ``output_index`` order.
    """
    from openai.types.responses import ResponseStreamEvent
    from pydantic import TypeAdapter

    if isinstance(events, (bytes, str)):
        events = stream_events(events)
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    assert events, "empty stream"
    for event in events:
        adapter.validate_python(event)
    numbers = [e["sequence_number"] for e in events]
    if consecutive:
        assert numbers == list(range(len(events))), f"sequence numbers {numbers}"
    else:
        assert all(a < b for a, b in itertools.pairwise(numbers)), f"sequence numbers {numbers}"
    assert events[0]["type"] == "response.created", events[0]["type"]
    assert events[-1]["type"] in _TERMINAL, events[-1]["type"]
    assert sum(e["type"] in _TERMINAL for e in events) == 1, "more than one terminal event"
    response_id = events[0]["response"]["id"]
    added: dict[int, Item] = {}
    done: dict[int, Item] = {}
    streamed: dict[tuple[int, str, int], str] = {}  # (output_index, field, part index) -> deltas so far
    for event in events:
        kind = event["type"]
        if "response" in event:
            assert event["response"]["id"] == response_id, "response id changed mid-stream"
            continue
        if kind == "error":
            continue
        index = event["output_index"]
        if kind == "response.output_item.added":
            assert index == len(added), f"item added at output_index {index}, expected {len(added)}"
            added[index] = event["item"]
            continue
        assert index in added and index not in done, f"{kind} for output_index {index}, which is not streaming"
        item_id = added[index].get("id")
        if "item_id" in event:
            assert event["item_id"] == item_id, (
                f"{kind} names item {event['item_id']}, output_index {index} is {item_id}"
            )
        if kind == "response.output_item.done":
            assert event["item"]["type"] == added[index]["type"] and event["item"].get("id") == item_id
            done[index] = event["item"]
            continue
        part = event.get("content_index", event.get("summary_index", event.get("command_index", 0)))
        if kind.endswith(".delta"):
            key = (index, kind.rsplit(".", 1)[0], part)
            streamed[key] = streamed.get(key, "") + event["delta"]
        elif kind.endswith(".done") and not kind.endswith("_part.done"):
            field = next(f for f in ("text", "arguments", "input", "refusal", "command") if f in event)
            so_far = streamed.get((index, kind.rsplit(".", 1)[0], part), "")
            assert so_far == event[field] or not so_far, f"{kind}: deltas {so_far!r} != {event[field]!r}"
    assert set(added) == set(done), f"items added but never done: {sorted(set(added) - set(done))}"
    got: str | None
    for index, item in done.items():
        for c, content in enumerate(item.get("content") or []):
            text = content.get("text", content.get("refusal"))
            got = streamed.get((index, "response.output_text", c), streamed.get((index, "response.refusal", c)))
            assert got is None or got == text, f"item {index} part {c}: deltas {got!r} != {text!r}"
        if item["type"] in ("function_call", "mcp_call"):
            prefix = (
                "response.function_call_arguments" if item["type"] == "function_call" else "response.mcp_call_arguments"
            )
            got = streamed.get((index, prefix, 0))
            assert got is None or got == item["arguments"], f"item {index}: argument deltas {got!r}"
        if item["type"] == "custom_tool_call":
            got = streamed.get((index, "response.custom_tool_call_input", 0))
            assert got is None or got == item["input"], f"item {index}: input deltas {got!r}"
    final = dict(events[-1]["response"])
    assert final["output"] == [done[i] for i in sorted(done)], "final output differs from the done items"
    return final
