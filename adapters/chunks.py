"""SDK run output -> Chat Completions JSON: chunks, completions, usage (pure, duck-typed).

A streamed drop-in run yields ordinary ``chat.completion.chunk`` objects. Tool
activity travels in chunks whose choice has an empty delta and whose extra
top-level ``celgate`` field describes the event (the ``openai`` client keeps
unknown fields, e.g. ``chunk.model_extra["celgate"]``)::

    {"type": "tool_call", "id": "call_1", "name": "get_weather",
     "arguments": "{\\"city\\": \\"Paris\\"}", "agent": "Weather"}
    {"type": "tool_result", "id": "call_1", "name": "get_weather",
     "output": "Sunny, 21 C", "agent": "Weather"}
    {"type": "handoff", "from": "Triage", "to": "Billing"}
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

__all__ = ["ChunkFactory", "EventTranslator", "completion", "output_text", "tool_text", "usage_dict"]


class ChunkFactory:
    """Chunks of one streamed completion: same id, creation time and model throughout."""

    def __init__(self, model: str) -> None:
        self.id = _completion_id()
        self.created = int(time.time())
        self.model = model

    def role(self) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": ""})

    def text(self, delta: str) -> dict[str, Any]:
        return self._chunk({"content": delta})

    def event(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {**self._chunk({}), "celgate": payload}

    def finish(self) -> dict[str, Any]:
        return self._chunk({}, finish_reason="stop")

    def usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        return {**self._base(), "choices": [], "usage": usage}

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**self._base(), "choices": [choice]}

    def _base(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }


def completion(model: str, content: str, usage: dict[str, Any]) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` with the run's final output."""
    return {
        "id": _completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }


def usage_dict(usage: Any) -> dict[str, Any]:
    """An ``agents.Usage`` in Chat Completions terms."""
    cached = getattr(usage.input_tokens_details, "cached_tokens", 0) or 0
    reasoning = getattr(usage.output_tokens_details, "reasoning_tokens", 0) or 0
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def output_text(value: Any) -> str:
    """Final output (or tool output) as message text.

    ``None`` -> ``""``; ``str`` as is; a dict with a string ``output_text``
    (Agent Builder's return shape) -> that; pydantic -> ``model_dump_json()``;
    anything else -> JSON.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    text = value.get("output_text") if isinstance(value, dict) else None
    if isinstance(text, str):
        return text
    dump = getattr(value, "model_dump_json", None)
    if callable(dump):
        return str(dump())
    return json.dumps(value, default=str, ensure_ascii=False)


def tool_text(value: Any) -> str:
    """A tool's result as the text the model reads: MCP tools return a text part, or a list of them."""
    parts = value if isinstance(value, list) else [value]
    texts = [_field(part, "text") for part in parts]
    if parts and all(isinstance(text, str) for text in texts):
        return "".join(texts)
    return output_text(value)


class EventTranslator:
    """SDK stream events of one run -> text deltas (``str``) and ``celgate`` event payloads.

    Text deltas are forwarded only while the current agent produces plain
    text: the JSON of structured-output agents (e.g. an Agent Builder
    classifier) is data for the workflow, not a message for the user.
    """

    def __init__(self) -> None:
        self._tool_names: dict[str, str] = {}
        self._plain_text = True

    def translate(self, event: Any) -> Iterator[str | dict[str, Any]]:
        kind = getattr(event, "type", None)
        if kind == "agent_updated_stream_event":
            self._plain_text = event.new_agent.output_type in (None, str)
        elif kind == "raw_response_event":
            data = event.data
            if self._plain_text and getattr(data, "type", None) == "response.output_text.delta" and data.delta:
                yield data.delta
        elif kind == "run_item_stream_event":
            payload = self._item_payload(event.name, event.item)
            if payload is not None:
                yield payload

    def _item_payload(self, name: str, item: Any) -> dict[str, Any] | None:
        if name == "tool_called" and _field(item.raw_item, "type") == "function_call":
            call_id = _field(item.raw_item, "call_id")
            self._tool_names[call_id] = _field(item.raw_item, "name")
            return {
                "type": "tool_call",
                "id": call_id,
                "name": self._tool_names[call_id],
                "arguments": _field(item.raw_item, "arguments"),
                "agent": item.agent.name,
            }
        if name == "tool_output":
            call_id = _field(item.raw_item, "call_id")
            return {
                "type": "tool_result",
                "id": call_id,
                "name": self._tool_names.get(call_id),
                "output": tool_text(item.output),
                "agent": item.agent.name,
            }
        if name == "handoff_occured":  # sic, the SDK's event name
            return {"type": "handoff", "from": item.source_agent.name, "to": item.target_agent.name}
        return None


def _field(raw: Any, name: str) -> Any:
    """Raw SDK items are pydantic models or TypedDict dicts depending on their origin."""
    return raw.get(name) if isinstance(raw, dict) else getattr(raw, name, None)


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"
