"""SDK run output -> Responses API JSON: the ``response`` object and its stream events (pure, duck-typed).

A drop-in's tools run inside celgate, so its responses hold assistant
``message`` items only. A ``function_call`` item would ask the client to run a
tool that already ran (or that policy denied).

- **Non-streamed.** One message with the run's final output.
- **Streamed.** Text is streamed as it comes, as on the chat path. Tool
  activity ends the current message item, so the text a model writes in a
  turn that also calls tools ("Let me check…") is a message of its own, and
  the next text opens a new one. If nothing was streamed (structured output, a
  workflow that only returns a value), the final output is sent as one message
  at the end. Tool activity itself is not an event: the Responses event set
  has no type for a tool the server ran for an agent, and stream helpers that
  meet an unknown type may fail.

A response echoes the request's ``instructions`` and ``metadata``. Its
``tools`` list is empty, because the client's tools are ignored, and ``store``
is false, because nothing is kept to continue from.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = ["ResponseStream", "response_object", "usage_dict"]


class ResponseStream:
    """The events of one streamed response, with consistent ids, output indexes and sequence numbers.

    Each method returns the events to send next, in order. The first call also
    returns ``response.created`` and ``response.in_progress``, so the caller
    decides when the stream starts (with the run's first output).
    """

    def __init__(self, model: str, request: Mapping[str, Any]) -> None:
        self._head = _Head(model, request)
        self._sequence = 0
        self._started = False
        self._output: list[dict[str, Any]] = []
        self._item_id: str | None = None  # the message item being streamed
        self._text: list[str] = []
        self._streamed_text = False

    def text(self, delta: str) -> list[dict[str, Any]]:
        """A text delta; opens a message item if none is open."""
        events = [*self._start(), *self._open_message()]
        self._text.append(delta)
        self._streamed_text = True
        events.append(
            self._event("response.output_text.delta", **self._at(), content_index=0, delta=delta, logprobs=[])
        )
        return events

    def tool_activity(self) -> list[dict[str, Any]]:
        """A tool call, tool result or handoff: the text so far is one message, the next text opens another."""
        return [*self._start(), *self._close_message()]

    def complete(self, final_text: str, usage: dict[str, Any]) -> list[dict[str, Any]]:
        """The end: ``final_text`` as a message if no text was streamed, then ``response.completed``."""
        events = self._start()
        if not self._streamed_text:
            events += self.text(final_text) if final_text else self._open_message()
        events += self._close_message()
        snapshot = self._head.snapshot("completed", list(self._output), usage)
        events.append(self._event("response.completed", response=snapshot))
        return events

    def _start(self) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        return [
            self._event(kind, response=self._head.snapshot("in_progress", [], None))
            for kind in ("response.created", "response.in_progress")
        ]

    def _open_message(self) -> list[dict[str, Any]]:
        if self._item_id is not None:
            return []
        self._item_id = _new_id("msg")
        item = {"id": self._item_id, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
        return [
            self._event("response.output_item.added", output_index=len(self._output), item=item),
            self._event("response.content_part.added", **self._at(), content_index=0, part=_text_part("")),
        ]

    def _close_message(self) -> list[dict[str, Any]]:
        if self._item_id is None:
            return []
        text = "".join(self._text)
        at = self._at()
        item = _message(self._item_id, text)
        events = [
            self._event("response.output_text.done", **at, content_index=0, text=text, logprobs=[]),
            self._event("response.content_part.done", **at, content_index=0, part=_text_part(text)),
            self._event("response.output_item.done", output_index=at["output_index"], item=item),
        ]
        self._output.append(item)
        self._item_id = None
        self._text = []
        return events

    def _at(self) -> dict[str, Any]:
        return {"item_id": self._item_id, "output_index": len(self._output)}

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return event


def response_object(model: str, request: Mapping[str, Any], text: str, usage: dict[str, Any]) -> dict[str, Any]:
    """A non-streamed ``response``: one message with the run's final output."""
    return _Head(model, request).snapshot("completed", [_message(_new_id("msg"), text)], usage)


def usage_dict(usage: Any) -> dict[str, Any]:
    """An ``agents.Usage`` in Responses terms."""
    input_details, output_details = usage.input_tokens_details, usage.output_tokens_details
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": getattr(input_details, "cached_tokens", 0) or 0,
            "cache_write_tokens": getattr(input_details, "cache_write_tokens", 0) or 0,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": getattr(output_details, "reasoning_tokens", 0) or 0},
        "total_tokens": usage.total_tokens,
    }


class _Head:
    """What every snapshot of one response shares: id, creation time, model and the echoed request fields."""

    def __init__(self, model: str, request: Mapping[str, Any]) -> None:
        self.id = _new_id("resp")
        self.created_at = int(time.time())
        self.model = model
        instructions = request.get("instructions")
        self.instructions = instructions if isinstance(instructions, str) else None
        metadata = request.get("metadata")
        self.metadata = dict(metadata) if isinstance(metadata, dict) else {}

    def snapshot(self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "completed_at": int(time.time()) if status == "completed" else None,
            "error": None,
            "incomplete_details": None,
            "instructions": self.instructions,
            "max_output_tokens": None,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "store": False,
            "temperature": None,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": None,
            "truncation": "disabled",
            "usage": usage,
            "metadata": dict(self.metadata),
        }


def _message(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": "completed", "content": [_text_part(text)], "role": "assistant"}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"
