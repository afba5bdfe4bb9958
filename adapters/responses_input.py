"""A Responses API request's ``instructions`` and ``input`` -> Agents SDK input items (pure).

The SDK's input items are Responses input items, so most pass through. What
changes is whatever points at server-side state, because a drop-in response is
never stored and the agent's model upstream never saw the client's items:

- ``instructions`` becomes a leading system message (the agent's own
  instructions still come first);
- a string ``input`` is one user message;
- item ``id``s are dropped; an assistant message gets the SDK's placeholder id
  instead, as chat history does (``messages``), so it merges with the
  function calls that follow it;
- ``previous_response_id`` and ``conversation`` are refused: there is no
  earlier state to continue, and silently losing the history would be worse.

Accepted items: messages (``user``, ``system``, ``developer``, ``assistant``),
``function_call`` and ``function_call_output``. Past calls are context only;
the SDK never re-executes them. Anything else (``item_reference``,
``reasoning``, hosted tool calls) is the client's 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agents.models.fake_id import FAKE_RESPONSES_ID

from .errors import MessageError

__all__ = ["INVALID_INPUT", "ResponsesConversation", "last_user_text", "to_input_items"]

INVALID_INPUT = "invalid_input"
_STATEFUL = ("previous_response_id", "conversation")
_INPUT_PARTS = {
    "user": ("input_text", "input_image", "input_file"),
    "system": ("input_text",),
    "developer": ("input_text",),
}


@dataclass(frozen=True, slots=True)
class ResponsesConversation:
    """A Responses request as a run takes it; converted only on use (a workflow needs one text)."""

    body: Mapping[str, Any]

    def __post_init__(self) -> None:
        for name in _STATEFUL:
            if self.body.get(name) is not None:
                raise MessageError(
                    f"'{name}' is not supported for drop-in agents: their responses are not stored; "
                    "send the whole conversation in 'input'",
                    "unsupported_parameter",
                )

    def input_items(self) -> list[dict[str, Any]]:
        return to_input_items(self.body)

    def last_user_text(self) -> str:
        return last_user_text(self.body)


def to_input_items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The request's ``instructions`` (as a system message) and ``input``, in order."""
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise MessageError("instructions must be a string", INVALID_INPUT)
    items = [{"role": "system", "content": instructions}] if instructions else []
    items.extend(_convert(index, item) for index, item in enumerate(_raw_items(body)))
    return items


def last_user_text(body: Mapping[str, Any]) -> str:
    """The text of the last user message (what an Agent Builder workflow takes as input)."""
    for item in reversed(_raw_items(body)):
        if _kind(item) == "message" and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            parts = _parts(content, "the last user message")
            return "\n".join(p.get("text", "") for p in parts if p.get("type") == "input_text")
    raise MessageError("input contains no user message", INVALID_INPUT)


def _raw_items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("input")
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise MessageError("input must be a string or a non-empty list of input items", INVALID_INPUT)
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise MessageError(f"input[{index}] must be an object", INVALID_INPUT)
    return raw


def _kind(item: Mapping[str, Any]) -> Any:
    """An item's type; a shorthand message (``{"role", "content"}``) has none."""
    return item.get("type", "message" if "role" in item else None)


def _convert(index: int, item: dict[str, Any]) -> dict[str, Any]:
    where = f"input[{index}]"
    kind = _kind(item)
    if kind == "message":
        return _message(item, where)
    if kind == "function_call":
        arguments = item.get("arguments")
        arguments = "{}" if arguments is None or arguments == "" else arguments
        if not isinstance(arguments, str):
            raise MessageError(f"{where}: function_call arguments must be a JSON string", INVALID_INPUT)
        return {
            "type": "function_call",
            "call_id": _call_id(item, where),
            "name": _name(item, where),
            "arguments": arguments,
        }
    if kind == "function_call_output":
        output = item.get("output")
        if not isinstance(output, str | list):
            raise MessageError(f"{where}: function_call_output output must be a string or a list", INVALID_INPUT)
        return {"type": "function_call_output", "call_id": _call_id(item, where), "output": output}
    raise MessageError(
        f"{where}: unsupported input item type {kind!r}; drop-in agents take messages, function_call "
        "and function_call_output items",
        INVALID_INPUT,
    )


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role, content = item.get("role"), item.get("content")
    if role == "assistant":
        return {
            "type": "message",
            "role": "assistant",
            "id": FAKE_RESPONSES_ID,
            "status": "completed",
            "content": _assistant_parts(content, where),
        }
    allowed = _INPUT_PARTS.get(role) if isinstance(role, str) else None
    if allowed is None:
        raise MessageError(f"{where}: unsupported role {role!r}", INVALID_INPUT)
    if isinstance(content, str):
        return {"role": role, "content": content}
    parts = _parts(content, where)
    for part in parts:
        if part.get("type") not in allowed:
            raise MessageError(f"{where}: unsupported {role} content part {part.get('type')!r}", INVALID_INPUT)
    return {"role": role, "content": parts}


def _assistant_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "output_text", "text": content, "annotations": []}] if content else []
    parts = []
    for part in _parts(content, where):
        if part.get("type") == "output_text" and isinstance(part.get("text"), str):
            parts.append({"type": "output_text", "text": part["text"], "annotations": part.get("annotations") or []})
        elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
            parts.append({"type": "refusal", "refusal": part["refusal"]})
        else:
            raise MessageError(f"{where}: unsupported assistant content part {part.get('type')!r}", INVALID_INPUT)
    return parts


def _parts(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list) or not all(isinstance(p, dict) for p in content):
        raise MessageError(f"{where}: content must be a string or a list of content parts", INVALID_INPUT)
    return content


def _call_id(item: Mapping[str, Any], where: str) -> str:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise MessageError(f"{where}: a {item.get('type')} item needs call_id", INVALID_INPUT)
    return call_id


def _name(item: Mapping[str, Any], where: str) -> str:
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise MessageError(f"{where}: a function_call item needs a name", INVALID_INPUT)
    return name
