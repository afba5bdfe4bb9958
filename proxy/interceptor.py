"""Tool calls in chat completions, held only as long as the tool-call hook needs.

A stream's raw SSE events go in; what the client may see comes out. Events
without tool-call deltas pass untouched and at once (content is never delayed
by a held call). A tool call's events are held until the hook can decide:
when its name is complete if the hook needs only the name (its first
arguments fragment follows the name, so a name split across deltas is never
judged by a prefix), else when its arguments are complete (a later index
starts, ``finish_reason`` arrives, or the stream ends). Allowed calls are released in order, byte-identical
(except that calls after a stripped one get their index lowered, so the
client sees indexes without gaps); stripped ones never reach the client; a rejected one ends the stream. If
every call of a choice was stripped, the final chunk says ``stop`` and a
content delta carries the deny message.

Non-stream completions go through the same hook (``filter_completion``).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .sse import encode_data_event, parse_event

__all__ = [
    "StreamInterceptor",
    "ToolCallHook",
    "ToolCallRejected",
    "ToolVerdict",
    "Verdict",
    "filter_completion",
]

_TOOL_CALLS_KEY = b'"tool_calls"'


class Verdict(enum.Enum):
    ALLOW = "allow"
    STRIP = "strip"  # drop this call, the rest of the response goes on
    REJECT = "reject"  # fail the whole response


@dataclass(frozen=True, slots=True)
class ToolVerdict:
    verdict: Verdict
    message: str = ""


ALLOWED = ToolVerdict(Verdict.ALLOW)


class ToolCallHook(Protocol):
    """What the interceptor asks about each tool call (the policy layer answers)."""

    def needs_arguments(self, name: str) -> bool: ...

    def decide(self, name: str, raw_arguments: str, call_id: str) -> ToolVerdict: ...


class ToolCallRejected(Exception):
    """A tool call whose rule says ``action: error``: the whole response fails."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _State(enum.Enum):
    PENDING = 0
    ALLOWED = 1
    STRIPPED = 2


@dataclass(slots=True)
class _Call:
    index: int
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    held: list[bytes] = field(default_factory=list)
    state: _State = _State.PENDING
    shift: int = 0  # stripped calls before this one: its index as the client sees it is index - shift


@dataclass(slots=True)
class _Choice:
    calls: dict[int, _Call] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    @property
    def all_stripped(self) -> bool:
        return bool(self.calls) and all(c.state is _State.STRIPPED for c in self.calls.values())


class StreamInterceptor:
    """Per-stream tool-call state: deltas by (choice, index), hold / release / drop."""

    __slots__ = ("_hook", "_choices", "_active", "_template")

    def __init__(self, hook: ToolCallHook) -> None:
        self._hook = hook
        self._choices: dict[int, _Choice] = {}
        self._active = False  # a tool call was seen: finish chunks need a look
        self._template: dict[str, Any] | None = None  # id/model/created for synthetic chunks

    def feed(self, raw: bytes) -> list[bytes]:
        """Events to write now for one raw upstream event (maybe none, maybe several)."""
        if not self._active and _TOOL_CALLS_KEY not in raw:
            return [raw]
        event = parse_event(raw)
        if event.data is None:
            return [raw]
        if event.data.strip() == "[DONE]":
            return [*self.finish(), raw]
        chunk = _json_or_none(event.data)
        if chunk is None or event.event not in (None, "message") or not isinstance(chunk.get("choices"), list):
            return [raw]
        return self._on_chunk(raw, chunk)

    def finish(self) -> list[bytes]:
        """Decide every call still held (the stream ended); return what to release."""
        out: list[bytes] = []
        for choice_index, choice in self._choices.items():
            out += self._complete(choice, choice_index)
            if choice.all_stripped and choice.messages:
                out.append(_synthetic(self._template, choice_index, {"content": _deny_text(choice)}, None))
                choice.messages.clear()
        return out

    def _on_chunk(self, raw: bytes, chunk: dict[str, Any]) -> list[bytes]:
        self._template = chunk
        choices = chunk["choices"]
        if len(choices) == 1 and _is_single_call_delta(choices[0]):
            return self._on_call_delta(raw, chunk, choices[0])
        if not any(_tool_deltas(c) for c in choices) and not any(self._finish_changes(c) for c in choices):
            return [raw]
        if len(choices) == 1 and not _tool_deltas(choices[0]):
            return self._on_finish_chunk(raw, chunk, choices[0])
        return self._split(chunk)

    def _on_finish_chunk(self, raw: bytes, chunk: dict[str, Any], choice_data: dict[str, Any]) -> list[bytes]:
        """A finish chunk completing held calls: decide them; it passes as sent unless every call was stripped."""
        choice_index = choice_data.get("index", 0)
        choice = self._choices[choice_index]
        out = self._complete(choice, choice_index)
        if choice.all_stripped:
            return out + self._split(chunk)
        return [*out, raw]

    def _finish_changes(self, choice_data: Any) -> bool:
        """A finish chunk must be rewritten only if it completes held or stripped calls."""
        if not isinstance(choice_data, dict) or not choice_data.get("finish_reason"):
            return False
        choice = self._choices.get(choice_data.get("index", 0))
        return choice is not None and any(c.state is not _State.ALLOWED for c in choice.calls.values())

    def _on_call_delta(self, raw: bytes, chunk: dict[str, Any], choice_data: dict[str, Any]) -> list[bytes]:
        self._active = True
        choice_index = choice_data.get("index", 0)
        choice = self._choices.setdefault(choice_index, _Choice())
        delta = choice_data["delta"]["tool_calls"][0]
        index = delta.get("index", 0)
        out: list[bytes] = []
        if index not in choice.calls:
            out += self._complete(choice, choice_index, below=index)
            choice.calls[index] = _Call(index)
        call = choice.calls[index]
        _apply_delta(call, delta)
        if call.state is _State.ALLOWED:
            out.append(_reindexed(raw, call.shift))
        elif call.state is _State.PENDING:
            call.held.append(raw)
            if call.name and call.arguments and not self._hook.needs_arguments(call.name):
                out += self._decide(choice, call)
        return out

    def _split(self, chunk: dict[str, Any]) -> list[bytes]:
        """Rare shapes (several calls or content plus calls in one event): one event per part."""
        out: list[bytes] = []
        for choice_data in chunk["choices"]:
            choice_index = choice_data.get("index", 0)
            delta = dict(choice_data.get("delta") or {})
            tool_deltas = delta.pop("tool_calls", None) or []
            finish = choice_data.get("finish_reason")
            rest = {k: v for k, v in choice_data.items() if k not in ("delta", "finish_reason", "index")}
            if delta:
                out.append(_synthetic(chunk, choice_index, delta, None, rest))
            for tool_delta in tool_deltas:
                part = _synthetic_dict(chunk, choice_index, {"tool_calls": [tool_delta]}, None)
                out += self._on_call_delta(encode_data_event(_dumps(part)), part, part["choices"][0])
            if finish:
                out += self._on_finish(chunk, choice_index, finish, rest)
        if chunk.get("usage") is not None:  # usage riding on a split chunk keeps its own event
            out.append(encode_data_event(_dumps({**{k: v for k, v in chunk.items() if k != "choices"}, "choices": []})))
        return out

    def _on_finish(self, chunk: dict[str, Any], choice_index: int, finish: str, rest: dict[str, Any]) -> list[bytes]:
        choice = self._choices.get(choice_index)
        if choice is None:
            return [_synthetic(chunk, choice_index, {}, finish, rest)]
        out = self._complete(choice, choice_index)
        if choice.all_stripped:
            out.append(_synthetic(chunk, choice_index, {"content": _deny_text(choice)}, None))
            choice.messages.clear()
            finish = "stop"
        out.append(_synthetic(chunk, choice_index, {}, finish, rest))
        return out

    def _complete(self, choice: _Choice, choice_index: int, below: int | None = None) -> list[bytes]:
        """Arguments of pending calls (with index < ``below``) are complete: decide them."""
        out: list[bytes] = []
        for index in sorted(choice.calls):
            call = choice.calls[index]
            if call.state is _State.PENDING and (below is None or index < below):
                out += self._decide(choice, call)
        return out

    def _decide(self, choice: _Choice, call: _Call) -> list[bytes]:
        verdict = self._hook.decide(call.name, "".join(call.arguments), call.id)
        held, call.held = call.held, []
        if verdict.verdict is Verdict.ALLOW:
            call.state = _State.ALLOWED
            call.shift = sum(1 for c in choice.calls.values() if c.state is _State.STRIPPED and c.index < call.index)
            return [_reindexed(raw, call.shift) for raw in held]
        if verdict.verdict is Verdict.REJECT:
            raise ToolCallRejected(verdict.message)
        call.state = _State.STRIPPED
        choice.messages.append(verdict.message)
        return []


def filter_completion(completion: dict[str, Any], hook: ToolCallHook) -> bool:
    """Apply the hook to a non-stream completion in place; True if anything changed."""
    changed = False
    for choice in completion.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        if not calls or not isinstance(message, dict):
            continue
        kept, messages = _filter_calls(calls, hook)
        if len(kept) == len(calls):
            continue
        changed = True
        if kept:
            message["tool_calls"] = kept
        else:
            message.pop("tool_calls")
            message["content"] = "\n".join(filter(None, [message.get("content"), *messages]))
            if choice.get("finish_reason") == "tool_calls":
                choice["finish_reason"] = "stop"
    return changed


def _filter_calls(calls: Iterable[Any], hook: ToolCallHook) -> tuple[list[Any], list[str]]:
    kept: list[Any] = []
    messages: list[str] = []
    for call in calls:
        function = (call.get("function") or {}) if isinstance(call, dict) else {}
        verdict = hook.decide(str(function.get("name", "")), str(function.get("arguments") or ""), str(call.get("id", "")))
        if verdict.verdict is Verdict.REJECT:
            raise ToolCallRejected(verdict.message)
        if verdict.verdict is Verdict.ALLOW:
            kept.append(call)
        else:
            messages.append(verdict.message)
    return kept, messages


def _reindexed(raw: bytes, shift: int) -> bytes:
    """A call's event with its index lowered past stripped calls, so clients see no gap (0, 1, ...).

    Clients such as the openai SDK's stream helper index a list by it. Calls
    before any stripped call keep their bytes.
    """
    if not shift:
        return raw
    chunk = json.loads(parse_event(raw).data or "{}")
    call = chunk["choices"][0]["delta"]["tool_calls"][0]
    call["index"] = call.get("index", 0) - shift
    return encode_data_event(_dumps(chunk))


def _is_single_call_delta(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta")
    if not isinstance(delta, dict) or choice.get("finish_reason"):
        return False
    calls = delta.get("tool_calls")
    if not isinstance(calls, list) or len(calls) != 1 or not isinstance(calls[0], dict):
        return False
    return all(k == "tool_calls" or k == "role" or v in (None, "") for k, v in delta.items())


def _tool_deltas(choice: Any) -> list[Any]:
    delta = choice.get("delta") if isinstance(choice, dict) else None
    return (delta.get("tool_calls") or []) if isinstance(delta, dict) else []


def _apply_delta(call: _Call, delta: dict[str, Any]) -> None:
    if delta.get("id"):
        call.id = delta["id"]
    function = delta.get("function") or {}
    if function.get("name"):
        call.name += function["name"]
    if function.get("arguments"):
        call.arguments.append(function["arguments"])


def _deny_text(choice: _Choice) -> str:
    return "\n".join(choice.messages)


def _synthetic_dict(
    template: dict[str, Any] | None,
    choice_index: int,
    delta: dict[str, Any],
    finish: str | None,
    rest: dict[str, Any] | None = None,
) -> dict[str, Any]:
    chunk = {k: v for k, v in (template or {}).items() if k not in ("choices", "usage")}
    chunk.setdefault("object", "chat.completion.chunk")
    chunk["choices"] = [{"index": choice_index, "delta": delta, **(rest or {}), "finish_reason": finish}]
    return chunk


def _synthetic(
    template: dict[str, Any] | None,
    choice_index: int,
    delta: dict[str, Any],
    finish: str | None,
    rest: dict[str, Any] | None = None,
) -> bytes:
    return encode_data_event(_dumps(_synthetic_dict(template, choice_index, delta, finish, rest)))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _json_or_none(data: str) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
