"""Chat Completions ``messages`` -> Agents SDK input items (pure).

The SDK only converts the other way (``Converter.items_to_messages``); this
is the inverse, so a multi-turn conversation reaches the agent's model as the
client sent it:

=====================  ========================================================
chat message           input item
=====================  ========================================================
system / developer     ``{"role", "content"}`` (text or text parts)
user                   ``{"role": "user", "content"}``; parts become
                       ``input_text`` / ``input_image`` / ``input_audio`` /
                       ``input_file``
assistant text         an output message with ``id`` ``FAKE_RESPONSES_ID``, so
                       the SDK merges it with the following tool calls into one
                       assistant message
assistant tool_calls   one ``function_call`` item each
tool                   ``function_call_output``
=====================  ========================================================

Historical tool calls are context only; the SDK never re-executes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agents.models.fake_id import FAKE_RESPONSES_ID

from .errors import MessageError

__all__ = ["ChatConversation", "last_user_text", "to_input_items"]


@dataclass(frozen=True, slots=True)
class ChatConversation:
    """A chat request's ``messages`` as a run takes them; converted only on use (a workflow needs one text)."""

    messages: Any

    def input_items(self) -> list[dict[str, Any]]:
        return to_input_items(self.messages)

    def last_user_text(self) -> str:
        return last_user_text(self.messages)


def to_input_items(messages: Any) -> list[dict[str, Any]]:
    """Convert a whole chat message list, in order."""
    if not isinstance(messages, list) or not messages:
        raise MessageError("messages must be a non-empty list")
    items: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise MessageError(f"messages[{index}] must be an object")
        items.extend(_convert(index, message))
    return items


def last_user_text(messages: Any) -> str:
    """The text of the last user message (what an Agent Builder workflow takes as input)."""
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            parts = _parts(content, "the last user message")
            return "\n".join(p.get("text", "") for p in parts if p.get("type") == "text")
    raise MessageError("messages contain no user message")


def _convert(index: int, message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    role = message.get("role")
    content = message.get("content")
    where = f"messages[{index}]"
    if role in ("system", "developer"):
        yield {"role": role, "content": _text_or_parts(content, where)}
    elif role == "user":
        yield {"role": "user", "content": _user_content(content, where)}
    elif role == "assistant":
        yield from _assistant(message, where)
    elif role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise MessageError(f"{where}: a tool message needs tool_call_id")
        yield {"type": "function_call_output", "call_id": call_id, "output": _text_or_parts(content, where)}
    else:
        raise MessageError(f"{where}: unsupported role {role!r}")


def _assistant(message: dict[str, Any], where: str) -> Iterator[dict[str, Any]]:
    parts = _assistant_parts(message.get("content"), where)
    if isinstance(message.get("refusal"), str):
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    # Emitted even when empty: it keeps two consecutive assistant messages apart.
    yield {
        "type": "message",
        "role": "assistant",
        "id": FAKE_RESPONSES_ID,
        "status": "completed",
        "content": parts,
    }
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise MessageError(f"{where}: every tool_call needs a function name")
        yield {
            "type": "function_call",
            "call_id": call.get("id") or "",
            "name": function["name"],
            "arguments": function.get("arguments") or "{}",
        }


def _assistant_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"type": "output_text", "text": content, "annotations": []}]
    parts = []
    for part in _parts(content, where):
        if part.get("type") == "text":
            parts.append({"type": "output_text", "text": part.get("text", ""), "annotations": []})
        elif part.get("type") == "refusal":
            parts.append({"type": "refusal", "refusal": part.get("refusal", "")})
        else:
            raise MessageError(f"{where}: unsupported assistant content part {part.get('type')!r}")
    return parts


def _user_content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    return [_user_part(part, where) for part in _parts(content, where)]


def _user_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "text":
        return {"type": "input_text", "text": part.get("text", "")}
    if kind == "image_url":
        image = part.get("image_url") or {}
        if not isinstance(image.get("url"), str):
            raise MessageError(f"{where}: an image_url part needs a url")
        return {"type": "input_image", "image_url": image["url"], "detail": image.get("detail", "auto")}
    if kind == "input_audio":
        return {"type": "input_audio", "input_audio": part.get("input_audio")}
    if kind == "file":
        file = part.get("file") or {}
        return {"type": "input_file", **{k: v for k, v in file.items() if v is not None}}
    raise MessageError(f"{where}: unsupported user content part {kind!r}")


def _text_or_parts(content: Any, where: str) -> str | list[dict[str, Any]]:
    """Text, or text parts kept as parts (the SDK turns them back into the same parts)."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    parts = []
    for part in _parts(content, where):
        if part.get("type") != "text":
            raise MessageError(f"{where}: only text content parts are allowed here")
        parts.append({"type": "input_text", "text": part.get("text", "")})
    return parts


def _parts(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list) or not all(isinstance(p, dict) for p in content):
        raise MessageError(f"{where}: content must be a string or a list of content parts")
    return content
