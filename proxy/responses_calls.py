"""Tool calls in the Responses API (``/v1/responses``), decided before the client can act on them.

Every ``ResponseOutputItem`` type is classified once (``CLIENT_EXECUTED``,
``PROVIDER_EXECUTED``, ``PLAIN_OUTPUT``; a test fails when the openai
package grows a type this table does not know). Items the app executes pass
the ``tool_call`` point; provider-executed ones were governed at admission
(their tools were offered in the request) and pass. An item of a type the
table does not know is a fault: a client newer than celgate might run it.
So every event or body holding items (``CALL_KEYS``) is read.

Streams: text events pass at once. A call item's events
(``response.output_item.added``, its argument or input deltas,
``.done``, ``response.output_item.done``) are held until the decision: at
``.added`` when policy needs only the name, else once the item is complete.
An allowed item's events are released in order; a stripped item's events
never reach the client, later items' ``output_index`` is lowered to match,
and ``sequence_number`` is renumbered so it stays strictly increasing. Every
``response`` snapshot (``response.created`` ... ``response.completed``) has
stripped items removed and undecided calls decided. When nothing callable
remains, an assistant message with the deny text takes the stripped calls'
place. Anything that does not read unambiguously is a fault.
"""

from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

from .jsontext import compact_json
from .sse import named_event
from .strict import UnreadableUpstream, first_mark, loads_strict, may_hold_calls, parse_event_strict
from .toolcalls import ProposedCall, ToolCallHook, ToolCallRejected, Verdict

__all__ = [
    "CALL_KEYS",
    "CLIENT_EXECUTED",
    "PLAIN_OUTPUT",
    "PROVIDER_EXECUTED",
    "ResponsesStreamInterceptor",
    "filter_items",
    "filter_response",
    "proposed_call",
]

# item type -> the ``tool.type`` / ``tool.name`` policy sees, and the field holding its arguments
CLIENT_EXECUTED: dict[str, tuple[str, str | None, str]] = {
    "function_call": ("function", None, "arguments"),  # name: the item's own
    "custom_tool_call": ("custom", None, "input"),
    "local_shell_call": ("local_shell", "local_shell", "action"),
    "shell_call": ("shell", "shell", "action"),
    "apply_patch_call": ("apply_patch", "apply_patch", "operation"),
    "computer_call": ("computer", "computer", "action"),
    "program": ("program", "program", "code"),  # JavaScript the client runs for programmatic tool calling
    "tool_search_call": ("tool_search", "tool_search", "arguments"),  # client-executed when execution == "client"
}
PROVIDER_EXECUTED = frozenset(
    {
        "file_search_call",
        "web_search_call",
        "code_interpreter_call",
        "image_generation_call",
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
    }
)
PLAIN_OUTPUT = frozenset(
    {
        "message",
        "reasoning",
        "compaction",
        "additional_tools",
        "function_call_output",
        "computer_call_output",
        "local_shell_call_output",
        "shell_call_output",
        "apply_patch_call_output",
        "custom_tool_call_output",
        "program_output",
        "tool_search_output",
        "mcp_approval_response",
        "configuration_update",
    }
)
_KNOWN = frozenset(CLIENT_EXECUTED) | PROVIDER_EXECUTED | PLAIN_OUTPUT
# The keys items travel under: an event's ``item``, a response's ``output``, a list's ``data``. An event or
# body holding none of them (and no \u escape) holds no item, so no call and no item of an unknown type.
CALL_KEYS = (b'"item"', b'"output"', b'"data"')
_SNAPSHOT_EVENTS = frozenset(
    {
        "response.created",
        "response.in_progress",
        "response.queued",
        "response.completed",
        "response.incomplete",
        "response.failed",
    }
)
_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def is_client_call(item: Any) -> bool:
    """Whether the app executes ``item``; an item of a type celgate does not know is a fault.

    (A client newer than celgate's table might execute it.)
    """
    if not isinstance(item, dict):
        raise UnreadableUpstream("upstream output item is not an object")
    kind = item.get("type")
    if kind not in _KNOWN:
        raise UnreadableUpstream(f"upstream output item has a type celgate does not know: {str(kind)[:40]!r}")
    if kind == "tool_search_call":
        return item.get("execution") != "server"
    return kind in CLIENT_EXECUTED


def proposed_call(item: dict[str, Any]) -> ProposedCall:
    """The policy view of a client-executed item (see docs/policies.md for the mapping)."""
    tool_type, fixed_name, field_name = CLIENT_EXECUTED[item["type"]]
    name = fixed_name if fixed_name is not None else item.get("name")
    if not isinstance(name, str) or not name:
        raise UnreadableUpstream(f"upstream {item['type']} item has no name")
    value = item.get(field_name)
    if value is None:
        value = item.get("actions") if item["type"] == "computer_call" else ""
    if fixed_name is None and not isinstance(value, str):  # clients parse these as text: another value reads apart
        raise UnreadableUpstream(f"upstream {item['type']} item has {field_name} that is not a string")
    raw = value if isinstance(value, str) else compact_json(value)
    call_id = item.get("call_id") or item.get("id") or ""
    if not isinstance(call_id, str):
        raise UnreadableUpstream(f"upstream {item['type']} item has an id that is not a string")
    return ProposedCall(name, raw, call_id, tool_type)


def _deny_message(text: str, status: str = "completed") -> dict[str, Any]:
    content = (
        [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status == "completed" else []
    )
    return {
        "id": "msg_celgate" + os.urandom(12).hex(),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def _decide(hook: ToolCallHook, item: dict[str, Any]) -> str | None:
    """None if the item may reach the client, else the deny text; ``action: error`` raises."""
    verdict = hook.decide(proposed_call(item))
    if verdict.verdict is Verdict.ERROR:
        raise ToolCallRejected(verdict.message)
    return verdict.message if verdict.verdict is Verdict.STRIP else None


def filter_items(items: Any, hook: ToolCallHook) -> tuple[list[Any], list[str]]:
    """``items`` minus the client-executed calls policy denies, and the deny texts."""
    if not isinstance(items, list):
        raise UnreadableUpstream("upstream output is not an array")
    kept: list[Any] = []
    denials: list[str] = []
    for item in items:
        denial = _decide(hook, item) if is_client_call(item) else None
        if denial is None:
            kept.append(item)
        else:
            denials.append(denial)
    return kept, denials


def filter_response(response: Any, hook: ToolCallHook) -> bool:
    """A ``response`` object filtered in place (non-stream, retrieve, cancel); True if anything changed."""
    if not isinstance(response, dict) or "output" not in response:
        return False
    kept, denials = filter_items(response["output"], hook)
    if not denials:
        return False
    if not any(is_client_call(item) for item in kept):
        kept.append(_deny_message("\n".join(denials)))
    response["output"] = kept
    return True


def filter_item_list(listing: Any, hook: ToolCallHook) -> bool:
    """A list object of items (``/responses/{id}/input_items``) filtered in place."""
    if not isinstance(listing, dict) or "data" not in listing:
        return False
    kept, denials = filter_items(listing["data"], hook)
    listing["data"] = kept
    return bool(denials)


@dataclass(slots=True)
class _Item:
    """One client-executed item of the stream, by its upstream output_index.

    Once decided it keeps only what later checks need: the item's type, id
    and name, and digests of the call and of its streamed arguments (a
    stream may decide many large calls; their text is not kept).
    """

    item: dict[str, Any]
    held: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)  # (raw, parsed) events
    arguments: list[str] = field(default_factory=list)  # deltas seen while undecided
    streamed: bytes | None = None  # digest of the streamed arguments, once decided
    call: bytes | None = None  # digest of the call as decided on its complete arguments
    decided: bool = False
    stripped: bool = False
    on_complete: bool = False  # decided on the complete item: no delta may follow
    done: bool = False
    held_bytes: int = 0


class ResponsesStreamInterceptor:
    """Per-stream state: client-executed items by output_index, output_index remapping, renumbering."""

    __slots__ = ("_active", "_added", "_denials", "_held", "_hook", "_items", "_max_held", "_next", "_stripped")

    def __init__(self, hook: ToolCallHook, max_held_bytes: int = 1 << 20) -> None:
        self._hook = hook
        self._max_held = max_held_bytes  # for all items held at once: a stream may open many
        self._held = 0
        self._items: dict[int, _Item] = {}
        self._stripped: list[int] = []  # upstream output_index of every stripped item
        self._denials: list[str] = []
        self._next: int | None = None  # the sequence_number the client must see next (once known)
        self._active = False  # an event needed a look: every later one is read (numbering, indexes)
        self._added = 0  # items added so far: some clients place an item by its order, not its output_index

    def feed(self, raw: bytes) -> list[bytes]:
        if not self._active and not may_hold_calls(raw, CALL_KEYS):
            return [raw]  # provably no item, nothing changed yet: the upstream's numbering stands
        parsed = parse_event_strict(raw)
        if parsed.data is None:
            return [raw]
        event = loads_strict(parsed.data)
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise UnreadableUpstream("upstream Responses event has no type")
        if parsed.event is not None and parsed.event != event["type"]:
            raise UnreadableUpstream(f"upstream event name {parsed.event!r} differs from its type {event['type']!r}")
        self._check_place(event)
        if not self._active and not _holds_call(event):
            return [raw]  # read to know its items; none is a call, nothing changed: as sent
        self._active = True
        if self._next is None and isinstance(event.get("sequence_number"), int):
            # the events before this one passed as sent: the client's numbering continues from here
            self._next = event["sequence_number"]
        return self._on_event(raw, event)

    def first_look(self, data: bytes) -> int:
        return 0 if self._active else first_mark(data, CALL_KEYS)

    def _check_place(self, event: dict[str, Any]) -> None:
        """Items come at output_index 0, 1, 2, ...; an event names one already added.

        The openai Node SDK appends each added item and applies later events to
        ``output[output_index]``: an item added out of place would take another
        item's events, and calls decided apart could merge.
        """
        index = event.get("output_index")
        if index is None:
            return
        if event["type"] == "response.output_item.added":
            if _int(index) != self._added:
                raise UnreadableUpstream(f"upstream added output item {index} in place {self._added}")
            self._added += 1
        elif _int(index) >= self._added:
            raise UnreadableUpstream(f"upstream sent {event['type']} for output item {index}, never added")

    def finish(self) -> list[bytes]:
        """The stream ended: nothing is released that was never decided."""
        if any(not entry.decided for entry in self._items.values()):
            raise UnreadableUpstream("upstream stream ended inside a tool call")
        return []

    def _on_event(self, raw: bytes, event: dict[str, Any]) -> list[bytes]:
        kind = event["type"]
        if kind in _SNAPSHOT_EVENTS:
            return self._on_snapshot(raw, event, final=kind in _FINAL_EVENTS)
        if "item" in event:
            return self._on_item_event(raw, event)
        index = event.get("output_index")
        if index is None:
            return self._out(raw, event)
        entry = self._items.get(_int(index))
        if entry is None:
            return self._out(raw, event)  # an event of a plain or provider-executed item
        return self._on_call_event(raw, event, entry)

    def _on_item_event(self, raw: bytes, event: dict[str, Any]) -> list[bytes]:
        item, index = event["item"], _int(event.get("output_index"))
        entry = self._items.get(index)
        if entry is None:
            if not is_client_call(item):
                return self._out(raw, event)
            entry = self._items[index] = _Item(item, held_bytes=len(raw))
            entry.held.append((raw, event))
            self._held += len(raw)
            if self._held > self._max_held:
                return self._refuse(entry, index)
            if event["type"] == "response.output_item.added" and self._name_decides(item):
                return self._decide(entry, index, on_complete=False)
            return self._release_if_done(entry, index, event)
        if not is_client_call(item) or item.get("type") != entry.item.get("type"):
            raise UnreadableUpstream(f"upstream changed the type of output item {index}")
        self._check_same_call(entry, item, index)
        entry.item = _slim(item) if entry.decided else item
        return self._on_call_event(raw, event, entry)

    def _name_decides(self, item: dict[str, Any]) -> bool:
        """Functions and custom tools arrive named at ``.added``: name-only rules decide then."""
        if item["type"] not in ("function_call", "custom_tool_call"):
            return False
        name = item.get("name")
        return isinstance(name, str) and bool(name) and not self._hook.needs_arguments(name)

    def _on_call_event(self, raw: bytes, event: dict[str, Any], entry: _Item) -> list[bytes]:
        index = _int(event["output_index"])
        kind = event["type"]
        if entry.done:
            raise UnreadableUpstream(f"upstream sent {kind} after output item {index} was done")
        delta = event.get("delta")
        if kind.endswith(".delta") and delta:
            if not isinstance(delta, str) and not isinstance(delta, dict):
                raise UnreadableUpstream(f"upstream {kind} has a malformed delta")
            if entry.on_complete and not entry.stripped:  # a stripped item's deltas are dropped
                raise UnreadableUpstream(f"upstream changed output item {index} after it was decided")
            if not entry.decided:  # a decided item's arguments are not kept
                entry.arguments.append(delta if isinstance(delta, str) else compact_json(delta))
        if kind == "response.output_item.done":
            entry.done = True
        if entry.stripped:
            return []
        checked = kind.endswith(("arguments.done", "input.done")) and (entry.on_complete or not entry.decided)
        if checked and _differs(entry, event.get("arguments", event.get("input"))):
            raise UnreadableUpstream(f"upstream's {kind} differs from its streamed deltas")
        if entry.decided:
            return self._out(raw, event)
        entry.held.append((raw, event))
        entry.held_bytes += len(raw)
        self._held += len(raw)
        if self._held > self._max_held:
            return self._refuse(entry, index)
        return self._release_if_done(entry, index, event)

    def _refuse(self, entry: _Item, index: int) -> list[bytes]:
        """An item too large to hold: denied without a decision on it (fail closed), recorded with the reason."""
        name = proposed_call({**entry.item, "arguments": "", "input": ""}).name
        reason = f"the calls held for a decision passed the stream's limit of {self._max_held} bytes"
        verdict = self._hook.refuse(ProposedCall(name, "", "", CLIENT_EXECUTED[entry.item["type"]][0]), reason)
        entry.decided = entry.stripped = entry.on_complete = True
        entry.held, entry.arguments = [], []  # cut short: nothing to compare the rest with
        self._let_go(entry)
        self._stripped.append(index)
        self._denials.append(verdict.message)
        return []

    def _let_go(self, entry: _Item) -> None:
        """The entry is decided: its events are no longer held (released or dropped), its text not kept."""
        self._held -= entry.held_bytes
        entry.held_bytes = 0
        if entry.arguments:
            entry.streamed = _digest("".join(entry.arguments))
        entry.arguments = []
        entry.item = _slim(entry.item)

    def _release_if_done(self, entry: _Item, index: int, event: dict[str, Any]) -> list[bytes]:
        if event["type"] == "response.output_item.done":
            entry.done = True
            return self._decide(entry, index, on_complete=True)
        return []

    def _check_same_call(self, entry: _Item, item: dict[str, Any], index: int) -> None:
        """The finished item must be the call that was decided: same name, same arguments as streamed."""
        before = entry.item
        if before.get("type") != item.get("type"):
            raise UnreadableUpstream(f"upstream changed the type of output item {index}")
        if before.get("name") != item.get("name") and before.get("name"):
            raise UnreadableUpstream(f"upstream changed the name of output item {index}")
        if entry.call is not None and not entry.stripped and _digest(proposed_call(item)) != entry.call:
            raise UnreadableUpstream(f"upstream changed output item {index} after it was decided")
        field_name = {"function_call": "arguments", "custom_tool_call": "input"}.get(item["type"])
        checked = field_name is not None and (entry.on_complete or not entry.decided)
        if checked and _differs(entry, item.get(field_name or "")):
            raise UnreadableUpstream(f"upstream's output item {index} differs from its streamed arguments")

    def _decide(self, entry: _Item, index: int, *, on_complete: bool) -> list[bytes]:
        item = entry.item
        if on_complete and item["type"] in ("function_call", "custom_tool_call") and entry.arguments:
            item = {**item, ("arguments" if item["type"] == "function_call" else "input"): "".join(entry.arguments)}
        denial = _decide(self._hook, item)
        entry.decided, entry.on_complete = True, on_complete
        if on_complete:
            entry.call = _digest(proposed_call(item))
        held, entry.held = entry.held, []
        self._let_go(entry)
        if denial is None:
            return [self._encoded(event, raw) for raw, event in held]
        entry.stripped = True
        self._stripped.append(index)
        self._denials.append(denial)
        return []

    def _on_snapshot(self, raw: bytes, event: dict[str, Any], *, final: bool) -> list[bytes]:
        response, output = _snapshot(event)
        if not self._items and not self._stripped and not any(is_client_call(item) for item in output):
            return self._out(raw, event)
        kept = [item for item in output if self._keeps(item, final)]
        out: list[bytes] = []
        if final and self._denials and not any(is_client_call(item) for item in kept):
            message = _deny_message("\n".join(self._denials))
            out += self._message_events(message, len(kept))
            kept.append(message)
            self._denials.clear()
        event = {**event, "response": {**response, "output": kept}}
        return [*out, self._encoded(event)]

    def _keeps(self, item: Any, final: bool) -> bool:
        """Whether a snapshot item reaches the client; calls never streamed are decided here."""
        if not is_client_call(item):
            return True
        for index, entry in self._items.items():
            if item.get("id") is not None and entry.item.get("id") == item.get("id"):
                if not entry.decided and final:
                    raise UnreadableUpstream(f"upstream completed with output item {index} undecided")
                if entry.decided and not entry.stripped:
                    self._check_same_call(entry, item, index)
                return entry.decided and not entry.stripped
        denial = _decide(self._hook, item)
        if denial is not None:
            self._denials.append(denial)
        return denial is None

    def _message_events(self, message: dict[str, Any], index: int) -> list[bytes]:
        """The stream events of the synthetic deny message, as the API streams a message item."""
        item_id, text = message["id"], message["content"][0]["text"]
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        events: list[dict[str, Any]] = [
            {"type": "response.output_item.added", "output_index": index, "item": _deny_message(text, "in_progress")},
            {
                "type": "response.content_part.added",
                "item_id": item_id,
                "output_index": index,
                "content_index": 0,
                "part": part,
            },
            {
                "type": "response.output_text.delta",
                "item_id": item_id,
                "output_index": index,
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            },
            {
                "type": "response.output_text.done",
                "item_id": item_id,
                "output_index": index,
                "content_index": 0,
                "text": text,
                "logprobs": [],
            },
            {
                "type": "response.content_part.done",
                "item_id": item_id,
                "output_index": index,
                "content_index": 0,
                "part": {**part, "text": text},
            },
            {"type": "response.output_item.done", "output_index": index, "item": message},
        ]
        events[0]["item"]["id"] = item_id
        return [self._write(event) for event in events]

    def _out(self, raw: bytes, event: dict[str, Any]) -> list[bytes]:
        return [self._encoded(event, raw)]

    def _encoded(self, event: dict[str, Any], raw: bytes | None = None) -> bytes:
        """The event as the client sees it: its own bytes while numbering and indexes are unchanged."""
        shift = self._shift(event.get("output_index"))
        number = event.get("sequence_number")
        if raw is not None and not shift and (number == self._next or (self._next is None and number is not None)):
            self._next = _int(number) + 1
            return raw
        event = copy.copy(event)
        if shift:
            event["output_index"] = event["output_index"] - shift
        return self._write(event)

    def _write(self, event: dict[str, Any]) -> bytes:
        """Encode an event celgate changed or made, numbered after the last one the client saw."""
        number = self._next if self._next is not None else event.get("sequence_number", 0)
        event["sequence_number"] = number
        self._next = _int(number) + 1
        return named_event(event["type"], event)

    def _shift(self, index: Any) -> int:
        if not self._stripped or index is None:
            return 0
        position = _int(index)
        return sum(1 for stripped in self._stripped if stripped < position)


def _slim(item: dict[str, Any]) -> dict[str, Any]:
    """What a decided item keeps: enough to match it in later events and snapshots."""
    return {key: item[key] for key in ("type", "id", "name") if key in item}


def _digest(value: Any) -> bytes:
    return hashlib.sha256((value if isinstance(value, str) else repr(value)).encode("utf-8", "surrogatepass")).digest()


def _differs(entry: _Item, complete: Any) -> bool:
    """Whether ``complete`` (a finished item's arguments or input) is not what was streamed for it."""
    if entry.arguments:
        return bool(complete != "".join(entry.arguments))
    return entry.streamed is not None and (not isinstance(complete, str) or _digest(complete) != entry.streamed)


def _holds_call(event: dict[str, Any]) -> bool:
    """Whether the event carries a client-executed item (as ``item``, or in a snapshot's ``output``)."""
    if "item" in event:
        return is_client_call(event["item"])
    return event["type"] in _SNAPSHOT_EVENTS and any(is_client_call(item) for item in _snapshot(event)[1])


def _snapshot(event: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """A snapshot event's ``response`` and its output items."""
    response = event.get("response")
    if not isinstance(response, dict):
        raise UnreadableUpstream(f"upstream {event['type']} has no response object")
    output = response.get("output") or []
    if not isinstance(output, list):
        raise UnreadableUpstream("upstream response output is not an array")
    return response, output


def _int(value: Any) -> int:
    """An ``output_index`` or ``sequence_number``: a count, never negative (a client reads ``output[-1]`` as the last
    item, so an event at -1 would change a call that was already decided)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UnreadableUpstream("upstream output_index or sequence_number is not a non-negative integer")
    return value
