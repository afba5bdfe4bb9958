"""The Responses interceptor is a strict reader: items it cannot read unambiguously are faults, never passes.

Each case once reached the client: a ``response.completed`` snapshot that
retyped an allowed call into one policy denies, an output item of a type
celgate does not know (a client newer than celgate may run it), a call
whose arguments are not text. The policy is a deny list (what no rule
denies is allowed), where reading a call under the wrong type lets it pass.
A stream ends with an SSE ``error`` event; a non-stream reply is a 502.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.helpers import Celgate
from tests.helpers import responses_wire as rw
from tests.helpers.fakeupstream import FakeUpstream, Script, Step

POLICY = """\
version: 1
defaults: {decision: allow}
rules:
  - name: no-custom-tools
    on: tool_call
    when: tool.type == "custom"
    effect: deny
  - name: no-shell
    on: tool_call
    tools: ["shell*"]
    effect: deny
"""
LOOKUP = rw.function_call_item("call_l", "lookup", "{}", id="fc_1")
RETYPED = {"type": "custom_tool_call", "id": "fc_1", "call_id": "call_l", "name": "lookup", "input": "rm -rf /"}
UNKNOWN = {"type": "shell_exec_call", "id": "se_1", "call_id": "call_u", "name": "shell.exec", "status": "completed"}
OBJECT_ARGUMENTS = {**rw.function_call_item("call_o", "lookup", "{}"), "arguments": {"q": "x"}}


def with_final_output(streamed: list[dict[str, Any]], final: list[dict[str, Any]]) -> list[Step]:
    """A well-formed stream of ``streamed`` whose ``response.completed`` snapshot holds ``final`` instead."""
    events = [json.loads(frame.partition(b"data: ")[2]) for frame in rw.response_stream(streamed)]
    assert events[-1]["type"] == "response.completed"
    events[-1]["response"]["output"] = final
    return [Step(rw.frame(event)) for event in events]


def item_events(item: dict[str, Any]) -> list[Step]:
    """An item streamed as ``.added`` and ``.done`` between a created and a completed snapshot."""
    response = rw.response_object([], status="in_progress")
    events = [
        {"type": "response.created", "sequence_number": 0, "response": response},
        {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": item},
        {"type": "response.output_item.done", "sequence_number": 2, "output_index": 0, "item": item},
        {"type": "response.completed", "sequence_number": 3, "response": {**response, "status": "completed",
                                                                            "output": [item]}},
    ]  # fmt: skip
    return [Step(rw.frame(event)) for event in events]


async def stream(http: aiohttp.ClientSession, gate: Celgate, upstream: FakeUpstream, steps: list[Step]) -> bytes:
    upstream.push(Script(steps=steps, headers={"Content-Type": "text/event-stream"}))
    async with http.post(gate.url + "/responses", json={"model": "m", "input": "x", "stream": True}) as response:
        assert response.status == 200
        return await response.read()


def assert_faulted(out: bytes, *absent: bytes) -> None:
    assert b"event: error" in out and b"upstream_unreadable" in out, out
    assert b"response.completed" not in out
    for text in absent:
        assert text not in out, out


async def test_a_snapshot_that_retypes_an_allowed_call_is_a_fault(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    """Allowed as the function ``lookup`` when it streamed; the snapshot clients run from makes it a custom tool."""
    out = await stream(http, gate, upstream, with_final_output([LOOKUP], [RETYPED]))
    assert_faulted(out, b"custom_tool_call", b"rm -rf")


@pytest.mark.parametrize(
    ("item", "absent"),
    [(UNKNOWN, b"se_1"), (OBJECT_ARGUMENTS, b'{"q"')],
    ids=["an unknown item type", "arguments that are not text"],
)
async def test_an_item_celgate_cannot_read_is_a_fault_streamed_or_not(
    item: dict[str, Any], absent: bytes, gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    assert_faulted(await stream(http, gate, upstream, item_events(item)), absent)
    upstream.push(Script(json=rw.response_object([rw.message_item("hi"), item])))
    async with http.post(gate.url + "/responses", json={"model": "m", "input": "x"}) as response:
        body = await response.read()
        assert response.status == 502 and absent not in body, body
    upstream.push(Script(json=rw.response_object([rw.message_item("hi"), item])))
    async with http.get(gate.url + "/responses/resp_1") as response:  # read back: the same reader
        assert response.status == 502


async def test_an_event_at_a_negative_index_is_a_fault(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    """The openai stream helper applies an event at output_index -1 to the last item: the call already allowed."""
    steps = item_events(LOOKUP)
    extra = {"type": "response.function_call_arguments.delta", "sequence_number": 3, "output_index": -1,
             "item_id": "fc_1", "delta": '"; rm -rf /'}  # fmt: skip
    out = await stream(http, gate, upstream, [*steps[:3], Step(rw.frame(extra)), *steps[3:]])
    assert_faulted(out, b"rm -rf")


async def test_an_item_out_of_place_is_a_fault(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    """The openai Node SDK appends each added item and applies later events by ``output[output_index]``:
    an item added at 5 sits at place 0, where an event for item 0 would change it after its decision."""
    response = rw.response_object([], status="in_progress")
    events = [
        {"type": "response.created", "sequence_number": 0, "response": response},
        {"type": "response.output_item.added", "sequence_number": 1, "output_index": 5, "item": LOOKUP},
        {"type": "response.function_call_arguments.delta", "sequence_number": 2, "output_index": 0,
         "item_id": "fc_1", "delta": "rm -rf /"},
    ]  # fmt: skip
    out = await stream(http, gate, upstream, [Step(rw.frame(event)) for event in events])
    assert_faulted(out, b"rm -rf")
