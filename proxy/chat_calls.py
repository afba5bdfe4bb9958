"""Tool calls in chat completions (``tools``, custom tools, legacy ``functions``), held only as long as policy needs.

A stream's raw SSE events go in; what the client may see comes out. Events
that provably hold no call (``strict.may_hold_calls``) pass untouched and at
once, and content is never delayed by a held call. A call's events are held
until the hook can decide: when its name is complete if the hook needs only
the name (its first arguments fragment follows the name, so a split name is
never judged by a prefix), else when its arguments are complete (a later
index starts, ``finish_reason`` arrives, or the stream ends). Allowed calls
are released in order and byte-identical, except that calls after a stripped
one get their index lowered so clients see no gap; a stripped call never
reaches the client, though the other fields of the deltas it rode in
(``role``) do; one whose rule says ``action: error`` ends the stream. If every
call of a choice was stripped, a content delta carries the deny message and
the choice finishes with ``stop``.

The reader is strict: a delta that would change a decided call (a new name,
an id reusing its index, arguments after a decision on complete arguments),
a malformed delta, or a call after its choice finished is a fault
(``UnreadableUpstream``), never a pass. Non-stream completions go through the
same hook (``filter_completion``) with the same checks.
"""

from __future__ import annotations

import copy
import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .sse import data_event
from .strict import UnreadableUpstream, first_mark, loads_strict, may_hold_calls, parse_event_strict
from .toolcalls import ProposedCall, ToolCallHook, ToolCallRejected, ToolVerdict, Verdict

__all__ = ["CALL_KEYS", "ChatStreamInterceptor", "filter_completion", "filter_messages"]

CALL_KEYS = (b'"tool_calls"', b'"function_call"')  # the keys a chat chunk or completion carries calls under
_MARKS = (*CALL_KEYS, b"[DONE]")  # what makes ``feed`` look at an event before the first call
_LEGACY = -1  # the call key of a choice's legacy ``function_call``
_CALL_TYPES = frozenset({"", "function", "custom"})  # "": a later delta, typed by its first
_CALL_FIELDS = ("tool_calls", "function_call")  # a delta's fields that carry calls
_CHOICE_FIELDS = ("index", "delta", "finish_reason")  # a choice's fields read apart from its ``extra``
_NOT_FRAME = ("choices", "usage")  # a chunk's fields a synthetic chunk does not copy


class _State(enum.Enum):
    PENDING = 0
    ALLOWED = 1
    STRIPPED = 2


@dataclass(slots=True)
class _Unit:
    """One client-visible event carrying a single call delta.

    ``raw`` is the upstream's bytes when the event was exactly this delta
    (sent byte-identical when allowed); ``rest`` the delta's other fields
    (``role``) that still go out when the call is stripped.
    """

    chunk: dict[str, Any]
    raw: bytes | None
    rest: dict[str, Any] | None = None


@dataclass(slots=True)
class _Call:
    key: int
    type: str = ""
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    held: list[_Unit] = field(default_factory=list)
    state: _State = _State.PENDING
    on_arguments: bool = False  # decided on complete arguments: no fragment may follow
    shift: int = 0  # stripped calls before this one: the client sees index - shift
    held_bytes: int = 0


@dataclass(slots=True)
class _Choice:
    index: int
    calls: dict[int, _Call] = field(default_factory=dict)
    denials: list[str] = field(default_factory=list)
    finished: bool = False

    @property
    def all_stripped(self) -> bool:
        return bool(self.calls) and self._all(_State.STRIPPED)

    def all_allowed(self) -> bool:
        return self._all(_State.ALLOWED)

    def _all(self, state: _State) -> bool:
        for call in self.calls.values():  # noqa: SIM110 (a generator is a function object and a frame per test)
            if call.state is not state:
                return False
        return True


class _Delta(NamedTuple):
    """One choice of a chunk, checked and taken apart."""

    choice: int  # the choice's index
    rest: dict[str, Any]  # the delta minus its calls
    calls: list[tuple[int, dict[str, Any]]]  # (call key, call delta) in order
    finish: str | None
    extra: dict[str, Any]  # choice fields other than index, delta and finish_reason (logprobs)


class ChatStreamInterceptor:
    """Per-stream tool-call state: deltas by (choice, call), hold / release / drop."""

    __slots__ = ("_active", "_choices", "_done", "_held", "_hook", "_last", "_max_held", "_n", "_order")

    def __init__(self, hook: ToolCallHook, max_held_bytes: int = 1 << 20, choices: int = 1) -> None:
        self._hook = hook
        self._max_held = max_held_bytes  # for all calls held at once: one per choice, and choices are many
        self._held = 0
        self._choices: dict[int, _Choice] = {}
        # Clients place a choice by the order it first appears in, not by its index (the openai SDK appends an
        # unknown one): with several choices (``n``), every chunk is read to check that order.
        self._n = choices
        self._order: set[int] = set()
        self._active = False  # a call was seen: every later event needs a look
        self._done = False
        self._last: dict[str, Any] = {}  # the last chunk with a call: its id/model/created frame synthetic chunks

    def feed(self, raw: bytes) -> list[bytes]:
        """Events to write now for one raw upstream event (maybe none, maybe several)."""
        if not self._active and self._n == 1 and not may_hold_calls(raw, CALL_KEYS) and raw.find(b"[DONE]") < 0:
            return [raw]
        event = parse_event_strict(raw)
        if event.data is None:
            return [raw]
        if event.data.startswith("[DONE]"):  # how the openai SDKs recognise the end
            out = self.finish()
            self._done = True
            return [*out, raw]
        if self._done:
            raise UnreadableUpstream("upstream sent tool calls after the end of the stream")
        chunk = loads_strict(event.data)
        if not isinstance(chunk, dict) or "choices" not in chunk:
            return [raw]  # no client reads calls from anything but a chunk's choices
        return self._on_chunk(raw, chunk)

    def first_look(self, data: bytes) -> int:
        return 0 if self._active else first_mark(data, _MARKS)

    def finish(self) -> list[bytes]:
        """Decide every call still held (the stream ended); return what to release."""
        out: list[bytes] = []
        for choice in self._choices.values():
            out += self._complete(choice)
            if choice.all_stripped and choice.denials and not choice.finished:
                out.append(self._synthetic(choice.index, {"content": "\n".join(choice.denials)}, None))
                choice.denials.clear()
        return out

    def _on_chunk(self, raw: bytes, chunk: dict[str, Any]) -> list[bytes]:
        deltas = list(map(_read_choice, _list(chunk["choices"], "choices")))
        self._check_places(deltas)
        if not self._changes(deltas):
            for delta in deltas:
                if delta.finish is not None and delta.choice in self._choices:
                    self._choices[delta.choice].finished = True  # its calls were all allowed: none may follow
            return [raw]
        self._active = True
        self._last = chunk
        if len(deltas) == 1 and len(deltas[0].calls) == 1 and deltas[0].finish is None and _only_framing(deltas[0]):
            delta = deltas[0]
            key, part = delta.calls[0]
            rest = delta.rest if "role" in delta.rest else None
            return self._on_call_delta(self._choice(delta.choice), key, part, _Unit(chunk, raw, rest))
        if len(deltas) == 1 and not deltas[0].calls and not deltas[0].rest:
            out = self._on_finish(deltas[0], raw)
            if out[-1] is not raw and chunk.get("usage") is not None:  # rewritten: usage keeps its own event
                out.append(self._usage_event(chunk))
            return out
        return self._split(chunk, deltas)

    def _check_places(self, deltas: list[_Delta]) -> None:
        """Each choice must land where celgate keeps it: no two choices' calls may merge in a client.

        With one choice, calls come in choice 0 only. With several, each choice
        first appears in index order (0, 1, 2, ...) and below ``n``.
        """
        for delta in deltas:
            if self._n == 1:
                if delta.calls and delta.choice != 0:
                    raise UnreadableUpstream(f"upstream sent a tool call in choice {delta.choice} of one")
            elif delta.choice not in self._order:
                if delta.choice != len(self._order) or delta.choice >= self._n:
                    raise UnreadableUpstream(f"upstream choice {delta.choice} is out of order")
                self._order.add(delta.choice)

    def _template(self) -> dict[str, Any]:
        """The frame of a synthetic chunk: the last call chunk's fields but its choices and usage."""
        return _without(self._last, _NOT_FRAME)

    def _usage_event(self, chunk: dict[str, Any]) -> bytes:
        return data_event({**self._template(), "choices": [], "usage": chunk["usage"]})

    def _changes(self, deltas: list[_Delta]) -> bool:
        """Whether the chunk needs more than passing on: it carries calls, or a finish that completes
        held or stripped calls."""
        for delta in deltas:
            if delta.calls:
                return True
            choice = self._choices.get(delta.choice) if delta.finish is not None else None
            if choice is not None and not choice.all_allowed():
                return True
        return False

    def _choice(self, index: int) -> _Choice:
        choice = self._choices.get(index)
        if choice is None:
            choice = self._choices[index] = _Choice(index)
        return choice

    def _split(self, chunk: dict[str, Any], deltas: list[_Delta]) -> list[bytes]:
        """Rare shapes (several calls, or content and calls, in one event): one event per part."""
        out: list[bytes] = []
        for delta in deltas:
            if delta.rest:
                out.append(self._synthetic(delta.choice, delta.rest, None, delta.extra))
            for key, part in delta.calls:
                carried = {"function_call": part} if key == _LEGACY else {"tool_calls": [part]}
                single = self._synthetic_dict(delta.choice, carried, None)
                out += self._on_call_delta(self._choice(delta.choice), key, part, _Unit(single, None))
            if delta.finish is not None:
                out += self._on_finish(delta, None)
        if chunk.get("usage") is not None:  # usage riding on a split chunk keeps its own event
            out.append(self._usage_event(chunk))
        return out

    def _on_call_delta(self, choice: _Choice, key: int, part: dict[str, Any], unit: _Unit) -> list[bytes]:
        if choice.finished:
            raise UnreadableUpstream(f"upstream sent a tool call after choice {choice.index} finished")
        out: list[bytes] = []
        call = choice.calls.get(key)
        if call is None:
            if key != _LEGACY:
                if key != len(choice.calls) - (_LEGACY in choice.calls):  # clients place a call by its order too
                    raise UnreadableUpstream(f"upstream tool call index {key} skips or repeats a place")
                out += self._complete(choice, below=key)  # an earlier call's arguments are complete
            call = choice.calls[key] = _Call(key)
        _apply(call, part, key)
        if call.state is _State.ALLOWED:
            out.append(_released(unit, call.shift))
        elif call.state is _State.STRIPPED:
            out += self._kept_fields(choice, unit)
        else:
            call.held.append(unit)
            size = len(unit.raw) if unit.raw is not None else len(str(part))
            call.held_bytes += size
            self._held += size
            if self._held > self._max_held:
                out += self._refuse(choice, call)
            elif call.name and call.arguments and not self._hook.needs_arguments(call.name):
                out += self._decide(choice, call, on_arguments=False)
        return out

    def _refuse(self, choice: _Choice, call: _Call) -> list[bytes]:
        """A call too large to hold: denied without a decision on it (fail closed), recorded with the reason."""
        reason = f"the calls held for a decision passed the stream's limit of {self._max_held} bytes"
        verdict = self._hook.refuse(ProposedCall(call.name, "", call.id, call.type or "function"), reason)
        return self._settle(choice, call, verdict, on_arguments=True)

    def _on_finish(self, delta: _Delta, raw: bytes | None) -> list[bytes]:
        choice = self._choices.get(delta.choice)
        finish = delta.finish
        if choice is None or not choice.calls:
            return [raw] if raw is not None else [self._synthetic(delta.choice, {}, finish, delta.extra)]
        out = self._complete(choice)
        choice.finished = True
        if choice.all_stripped:
            out.append(self._synthetic(choice.index, {"content": "\n".join(choice.denials)}, None))
            choice.denials.clear()
            return [*out, self._synthetic(choice.index, {}, "stop", delta.extra)]
        return [*out, raw if raw is not None else self._synthetic(choice.index, {}, finish, delta.extra)]

    def _complete(self, choice: _Choice, below: int | None = None) -> list[bytes]:
        """Arguments of pending calls (with key < ``below``) are complete: decide them."""
        out: list[bytes] = []
        for key in sorted(choice.calls):
            call = choice.calls[key]
            if call.state is _State.PENDING and (below is None or key < below):
                out += self._decide(choice, call, on_arguments=True)
        return out

    def _decide(self, choice: _Choice, call: _Call, *, on_arguments: bool) -> list[bytes]:
        proposed = ProposedCall(call.name, "".join(call.arguments), call.id, call.type or "function")
        return self._settle(choice, call, self._hook.decide(proposed), on_arguments=on_arguments)

    def _settle(self, choice: _Choice, call: _Call, verdict: ToolVerdict, *, on_arguments: bool) -> list[bytes]:
        call.on_arguments = on_arguments
        held, call.held = call.held, []
        self._held -= call.held_bytes
        call.held_bytes = 0
        call.arguments.clear()  # decided: later fragments are checked as they come, never kept
        if verdict.verdict is Verdict.ERROR:
            raise ToolCallRejected(verdict.message)
        if verdict.verdict is Verdict.ALLOW:
            call.state = _State.ALLOWED
            if call.key != _LEGACY:
                call.shift = sum(
                    1 for c in choice.calls.values() if c.state is _State.STRIPPED and _LEGACY != c.key < call.key
                )
            return [_released(unit, call.shift) for unit in held]
        call.state = _State.STRIPPED
        choice.denials.append(verdict.message)
        return [event for unit in held for event in self._kept_fields(choice, unit)]

    def _kept_fields(self, choice: _Choice, unit: _Unit) -> list[bytes]:
        return [self._synthetic(choice.index, unit.rest, None)] if unit.rest else []

    def _synthetic_dict(
        self, index: int, delta: dict[str, Any], finish: str | None, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        chunk = self._template()
        chunk.setdefault("object", "chat.completion.chunk")
        chunk["choices"] = [{"index": index, "delta": delta, **(extra or {}), "finish_reason": finish}]
        return chunk

    def _synthetic(
        self, index: int, delta: dict[str, Any], finish: str | None, extra: dict[str, Any] | None = None
    ) -> bytes:
        return data_event(self._synthetic_dict(index, delta, finish, extra))


def _released(unit: _Unit, shift: int) -> bytes:
    """The unit's event as the client sees it: byte-identical, or with its call index lowered by ``shift``."""
    if not shift and unit.raw is not None:
        return unit.raw
    chunk = unit.chunk
    if shift:
        chunk = copy.deepcopy(chunk)
        part = chunk["choices"][0]["delta"]["tool_calls"][0]
        part["index"] -= shift
    return data_event(chunk)


def _only_framing(delta: _Delta) -> bool:
    """The delta carries nothing but its call and empty framing (``role``, null content): one unit."""
    for key, value in delta.rest.items():  # noqa: SIM110 (per event: a loop, not a generator's frame)
        if key != "role" and value is not None and value != "":
            return False
    return True


def _read_choice(choice: Any) -> _Delta:
    if not isinstance(choice, dict):
        raise UnreadableUpstream("upstream chunk has a choice that is not an object")
    if choice.get("message") is not None:  # some clients read a chunk's message like a completion's
        raise UnreadableUpstream("upstream chunk has a message where a delta belongs")
    index = _int(choice.get("index", 0), "choice index")
    delta = choice.get("delta")
    if delta is None:
        delta = {}
    elif not isinstance(delta, dict):
        raise UnreadableUpstream("upstream chunk has a delta that is not an object")
    finish = choice.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise UnreadableUpstream("upstream chunk has a finish_reason that is not a string")
    calls: list[tuple[int, dict[str, Any]]] = []
    for part in _list(delta.get("tool_calls"), "tool_calls"):
        if not isinstance(part, dict) or "index" not in part:
            raise UnreadableUpstream("upstream tool call delta is not an object with an index")
        calls.append((_int(part["index"], "tool call index"), part))
    legacy = delta.get("function_call")
    if legacy is not None:
        if not isinstance(legacy, dict):
            raise UnreadableUpstream("upstream function_call delta is not an object")
        calls.insert(0, (_LEGACY, legacy))
    return _Delta(index, _without(delta, _CALL_FIELDS), calls, finish, _without(choice, _CHOICE_FIELDS))


def _without(fields: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``fields`` without ``names`` (a copy and pops: no comprehension's function and frame per event)."""
    kept = dict(fields)
    for name in names:
        kept.pop(name, None)
    return kept


def _apply(call: _Call, part: dict[str, Any], key: int) -> None:
    """Add one delta to its call; a delta that would change a decided call is a fault."""
    kind, name, arguments, call_id = _call_fields(part, key)
    if call_id and call.id and call_id != call.id:
        raise UnreadableUpstream(f"upstream reused tool call index {key} for a second call")
    if kind and call.type and kind != call.type:
        raise UnreadableUpstream(f"upstream changed the type of tool call {key}")
    if call.state is _State.ALLOWED and (name or (arguments and call.on_arguments)):  # a stripped call's are dropped
        raise UnreadableUpstream(f"upstream changed tool call {key} after it was decided")
    call.type = call.type or kind
    call.id = call.id or call_id
    call.name += name
    if arguments and call.state is _State.PENDING:  # a decided call's arguments are not kept
        call.arguments.append(arguments)


def _call_fields(part: dict[str, Any], key: int) -> tuple[str, str, str, str]:
    """``(type, name fragment, arguments fragment, id)`` of one call delta (legacy, function or custom)."""
    if key == _LEGACY:
        return "function", _str(part.get("name")), _str(part.get("arguments")), ""
    kind = _str(part.get("type"))
    if kind not in _CALL_TYPES:
        raise UnreadableUpstream(f"upstream tool call has an unknown type {kind[:40]!r}")
    function, custom = part.get("function"), part.get("custom")
    if (custom is not None or kind == "custom") and (function is not None or kind == "function"):
        # clients differ in which they read (the openai SDK's stream types know only `function`)
        raise UnreadableUpstream("upstream tool call is both a function and a custom call")
    if custom is not None or kind == "custom":
        body = _dict(custom, "custom")
        return kind or "custom", _str(body.get("name")), _str(body.get("input")), _str(part.get("id"))
    body = _dict(function, "function")
    return kind, _str(body.get("name")), _str(body.get("arguments")), _str(part.get("id"))


def filter_completion(completion: Any, hook: ToolCallHook) -> bool:
    """Apply the hook to a non-stream completion in place; True if anything changed."""
    if not isinstance(completion, dict):
        return False
    changed = False
    for choice in _list(completion.get("choices"), "choices"):
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(choice, dict) and choice.get("delta") is not None:  # a chunk's delta where a message belongs
            raise UnreadableUpstream("upstream completion has a delta where a message belongs")
        if message is None:
            continue
        if not isinstance(message, dict):
            raise UnreadableUpstream("upstream completion has a message that is not an object")
        changed |= _filter_message(choice, message, hook)
    return changed


def filter_messages(messages: Any, hook: ToolCallHook) -> bool:
    """A list of stored assistant messages (``/chat/completions/{id}/messages``), filtered in place."""
    changed = False
    for message in _list(messages, "data"):
        if isinstance(message, dict):
            changed |= _filter_message({}, message, hook)
    return changed


def _filter_message(choice: dict[str, Any], message: dict[str, Any], hook: ToolCallHook) -> bool:
    denials: list[str] = []
    kept = [call for call in _list(message.get("tool_calls"), "tool_calls") if _allowed(_proposed(call), hook, denials)]
    legacy = message.get("function_call")
    legacy_kept = legacy is not None and _allowed(_proposed_legacy(legacy), hook, denials)
    if not denials:
        return False
    if kept:
        message["tool_calls"] = kept
    else:
        message.pop("tool_calls", None)
    if legacy is not None and not legacy_kept:
        message.pop("function_call")
    if not kept and not legacy_kept:
        message["content"] = "\n".join(filter(None, [message.get("content"), *denials]))
        if choice.get("finish_reason") in ("tool_calls", "function_call"):
            choice["finish_reason"] = "stop"
    return True


def _allowed(call: ProposedCall, hook: ToolCallHook, denials: list[str]) -> bool:
    verdict = hook.decide(call)
    if verdict.verdict is Verdict.ERROR:
        raise ToolCallRejected(verdict.message)
    if verdict.verdict is Verdict.STRIP:
        denials.append(verdict.message)
        return False
    return True


def _proposed(call: Any) -> ProposedCall:
    if not isinstance(call, dict):
        raise UnreadableUpstream("upstream completion has a tool call that is not an object")
    kind, name, arguments, call_id = _call_fields(call, 0)
    return ProposedCall(name, arguments, call_id, kind or "function")


def _proposed_legacy(call: Any) -> ProposedCall:
    body = _dict(call, "function_call")
    return ProposedCall(_str(body.get("name")), _str(body.get("arguments")), "", "function")


def _list(value: Any, name: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise UnreadableUpstream(f"upstream {name} is not an array")
    return value


def _dict(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UnreadableUpstream(f"upstream {name} is not an object")
    return value


def _str(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UnreadableUpstream("upstream tool call field is not a string")
    return value


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnreadableUpstream(f"upstream {name} is not an integer")
    return value
