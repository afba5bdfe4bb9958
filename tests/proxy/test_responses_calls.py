"""Unit tests of the Responses interceptor.

The item classification, and properties over re-chunked and mutated streams.
"""

from __future__ import annotations

import itertools
import json
import tracemalloc
import typing
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.conversations import ConversationItem
from openai.types.responses import ResponseItem, ResponseOutputItem

from celgate.proxy.responses_calls import (
    CLIENT_EXECUTED,
    PLAIN_OUTPUT,
    PROVIDER_EXECUTED,
    ResponsesStreamInterceptor,
    filter_response,
)
from celgate.proxy.sse import SSESplitter
from celgate.proxy.strict import UnreadableUpstream
from celgate.proxy.toolcalls import ALLOWED, ProposedCall, ToolCallRejected, ToolVerdict, Verdict, intercept
from tests.helpers import responses_wire as rw


def _members(union: Any) -> list[Any]:
    args = typing.get_args(union)
    if typing.get_origin(union) is typing.Annotated:
        return _members(args[0])
    if typing.get_origin(union) is typing.Union:
        return [m for a in args for m in _members(a)]
    return [union]


def test_every_output_item_type_of_the_openai_package_is_classified_once() -> None:
    """Fails when the openai package grows an item type this table does not know: classify it first.

    Input items (``/input_items``) and conversation items are read by the same table, so they count too:
    an item of an unknown type is a fault.
    """
    unions = (ResponseOutputItem, ResponseItem, ConversationItem)
    types = {typing.get_args(m.model_fields["type"].annotation)[0] for u in unions for m in _members(u)}
    tables = [set(CLIENT_EXECUTED), set(PROVIDER_EXECUTED), set(PLAIN_OUTPUT)]
    assert not (tables[0] & tables[1] or tables[0] & tables[2] or tables[1] & tables[2])
    unclassified = types - set().union(*tables)
    assert unclassified == set(), f"classify these output item types: {sorted(unclassified)}"


class Hook:
    def __init__(self, denied: set[str], *, needs_arguments: bool = False) -> None:
        self.denied = denied
        self.arguments = needs_arguments
        self.decided: list[str] = []

    def needs_arguments(self, name: str) -> bool:
        return self.arguments

    def decide(self, call: ProposedCall) -> ToolVerdict:
        self.decided.append(call.name)
        if call.name == "explode":
            return ToolVerdict(Verdict.ERROR, "boom")
        return ToolVerdict(Verdict.STRIP, f"{call.name} denied") if call.name in self.denied else ALLOWED


def run(events: list[bytes], hook: Hook, cuts: list[int] | None = None) -> bytes:
    """Feed the stream through splitter and interceptor, cut into reads at ``cuts``."""
    data = b"".join(events)
    points = sorted({0, *(cuts or []), len(data)})
    splitter, interceptor = SSESplitter(), ResponsesStreamInterceptor(hook)
    out = [piece for a, b in itertools.pairwise(points) for piece in intercept(interceptor, splitter.feed(data[a:b]))]
    out += intercept(interceptor, splitter.flush())
    return b"".join(out + interceptor.finish())


OUTPUT = [
    rw.message_item("hello there"),
    rw.function_call_item("call_1", "shell.exec", '{"cmd":"rm -rf /"}'),
    rw.function_call_item("call_2", "lookup", '{"q":"x"}'),
    rw.reasoning_item(),
    rw.custom_tool_call_item(name="shell.exec", input="rm"),
    rw.message_item("bye"),
]


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=20000), max_size=12), st.sampled_from([1, 2, 5]), st.booleans())
def test_any_rechunking_gives_byte_identical_output(cuts: list[int], split: int, needs_arguments: bool) -> None:
    events = rw.response_stream(OUTPUT, split_arguments=split, id="resp_1", created_at=1)
    whole = run(events, Hook({"shell.exec"}, needs_arguments=needs_arguments))
    assert run(events, Hook({"shell.exec"}, needs_arguments=needs_arguments), cuts) == whole
    assert b"shell.exec" not in whole and b"lookup" in whole


def test_an_unchanged_stream_passes_byte_identical() -> None:
    events = rw.response_stream(OUTPUT, id="resp_1", created_at=1)
    assert run(events, Hook(set())) == b"".join(events)


def client_view(out: bytes) -> list[dict[str, Any]]:
    """The events as a client parses them (data lines as JSON; what does not parse is skipped)."""
    events = []
    for frame in out.split(b"\n\n"):
        data = b"\n".join(line[5:].lstrip() for line in frame.splitlines() if line.startswith(b"data:"))
        try:
            event = json.loads(data)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def delivered_calls(out: bytes) -> set[str]:
    names: set[str] = set()
    for event in client_view(out):
        for item in [event.get("item"), *((event.get("response") or {}).get("output") or [])]:
            if isinstance(item, dict) and item.get("type") in CLIENT_EXECUTED:
                names.add(str(item.get("name") or item["type"]))
    return names


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_random_mutations_never_deliver_a_denied_call(data: st.DataObject) -> None:
    events = rw.response_stream(OUTPUT, split_arguments=2, id="resp_1", created_at=1)
    raw = bytearray(b"".join(events))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        position = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "duplicate", "swap-name"]))
        if action == "flip":
            raw[position] = data.draw(st.integers(min_value=0, max_value=255))
        elif action == "delete":
            del raw[position : position + data.draw(st.integers(min_value=1, max_value=40))]
        elif action == "duplicate":
            raw[position:position] = raw[position : position + data.draw(st.integers(min_value=1, max_value=200))]
        else:
            raw[:] = raw.replace(b'"lookup"', b'"shell.exec"', 1)
    try:
        out = run([bytes(raw)], Hook({"shell.exec"}))
    except (UnreadableUpstream, ToolCallRejected):
        return  # a fault: the stream ends with an error event, nothing more is delivered
    assert "shell.exec" not in delivered_calls(out)


def test_a_denied_call_renumbers_later_items_and_events() -> None:
    out = run(rw.response_stream(OUTPUT, id="resp_1", created_at=1), Hook({"shell.exec"}))
    events = client_view(out)
    numbers = [e["sequence_number"] for e in events]
    assert numbers == sorted(set(numbers))
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    assert added == list(range(len(added)))
    final = events[-1]["response"]["output"]
    assert [i["type"] for i in final] == ["message", "function_call", "reasoning", "message"]


def test_a_call_changed_after_the_decision_is_a_fault() -> None:
    events = rw.response_stream([rw.function_call_item("c", "lookup", '{"q":"x"}')], id="r", created_at=1)
    tampered = [
        e.replace(b'"arguments":"{\\"q\\":\\"x\\"}"', b'"arguments":"{\\"q\\":\\"evil\\"}"')
        if b"response.output_item.done" in e
        else e
        for e in events
    ]
    with pytest.raises(UnreadableUpstream):
        run(tampered, Hook(set(), needs_arguments=True))


def test_a_snapshot_call_never_streamed_is_decided() -> None:
    events = rw.response_stream([rw.message_item("x")], id="r", created_at=1)
    smuggled = rw.function_call_item("c", "shell.exec", "{}")
    events[-1] = events[-1].replace(b'"output":[', b'"output":[' + json.dumps(smuggled).encode() + b",", 1)
    out = run(events, Hook({"shell.exec"}))
    assert "shell.exec" not in delivered_calls(out)


def test_non_stream_filter_and_error() -> None:
    response = rw.response_object(OUTPUT)
    assert filter_response(response, Hook({"shell.exec"}))
    assert [i["type"] for i in response["output"]] == ["message", "function_call", "reasoning", "message"]
    with pytest.raises(ToolCallRejected):
        filter_response(rw.response_object([rw.function_call_item("c", "explode", "{}")]), Hook(set()))


def test_the_deny_message_continues_the_numbering_of_events_passed_as_sent() -> None:
    """Events before the first call pass byte-identical; what celgate writes after them is numbered on from there."""
    events = rw.response_stream(
        [rw.message_item("hi"), rw.function_call_item("c", "shell.exec", "{}")], id="r", created_at=1
    )
    numbers = [e["sequence_number"] for e in client_view(run(events, Hook({"shell.exec"})))]
    assert numbers == sorted(set(numbers)) and len(numbers) > 8


def test_decided_calls_keep_no_text() -> None:
    """A stream of many large calls, each decided on its complete arguments, leaves no arguments behind."""
    interceptor = ResponsesStreamInterceptor(Hook(set(), needs_arguments=True))
    big = json.dumps({"data": "x" * 100_000})
    items = [rw.function_call_item(f"c{k}", "lookup", big) for k in range(50)]
    splitter = SSESplitter()
    tracemalloc.start()
    try:
        for raw in splitter.feed(b"".join(rw.response_stream(items)[:-1])):  # all but response.completed
            interceptor.feed(raw)
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert retained < 1_000_000, retained  # 50 calls of 100 kB each: their text would be 5 MB
