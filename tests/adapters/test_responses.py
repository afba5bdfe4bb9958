"""Responses formatting: valid ``response`` objects and well-formed event streams, without function_call items."""

from __future__ import annotations

from typing import Any

from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from agents import Usage
from celgate.adapters.responses import ResponseStream, response_object, usage_dict
from tests.helpers.responses_wire import check_stream

USAGE = usage_dict(Usage(requests=2, input_tokens=12, output_tokens=5, total_tokens=17))
REQUEST = {"model": "Agent", "input": "hi", "instructions": "Be kind.", "metadata": {"team": "a"}, "tools": [{}]}


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def test_a_response_object_validates_and_echoes_the_request() -> None:
    body = response_object("Agent", REQUEST, "Sunny.", USAGE)
    parsed = Response.model_validate(body)
    assert parsed.output_text == "Sunny."
    assert (parsed.model, parsed.status, parsed.instructions, parsed.metadata) == (
        "Agent",
        "completed",
        "Be kind.",
        {"team": "a"},
    )
    assert parsed.tools == [] and parsed.store is False  # the client's tools are ignored; nothing is stored
    assert parsed.id.startswith("resp_") and parsed.output[0].id.startswith("msg_")
    assert [item.type for item in parsed.output] == ["message"]
    assert parsed.usage is not None
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens, parsed.usage.total_tokens) == (12, 5, 17)


def test_a_streamed_run_is_a_well_formed_stream_with_one_message_per_text_run() -> None:
    stream = ResponseStream("Agent", REQUEST)
    events = [
        *stream.text("Let me "),
        *stream.text("check."),
        *stream.tool_activity(),  # a tool call: the text so far is one message
        *stream.tool_activity(),  # its result: nothing open, nothing to send
        *stream.text("Sunny, "),
        *stream.text("21 C."),
        *stream.complete("ignored: text was streamed", USAGE),
    ]
    final = check_stream(events)  # consecutive sequence numbers, item ids, deltas add up, snapshot = done items
    assert kinds(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    parsed = Response.model_validate(final)
    assert [item.type for item in parsed.output] == ["message", "message"]
    assert parsed.output_text == "Let me check.Sunny, 21 C."
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.added"] == [0, 1]
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["usage"] is None
    assert final["usage"] == USAGE and final["metadata"] == {"team": "a"}


def test_every_event_is_an_openai_stream_event() -> None:
    stream = ResponseStream("Agent", {})
    events = [*stream.text("a"), *stream.complete("", USAGE)]
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    assert [type(adapter.validate_python(e)).__name__ for e in events][-1] == "ResponseCompletedEvent"


def test_the_final_output_is_one_message_when_nothing_was_streamed() -> None:
    stream = ResponseStream("Agent", {})
    events = [*stream.tool_activity(), *stream.complete('{"label":"ok"}', USAGE)]
    final = check_stream(events)
    assert kinds(events)[:2] == ["response.created", "response.in_progress"]  # tool activity started the stream
    assert Response.model_validate(final).output_text == '{"label":"ok"}'


def test_an_empty_final_output_is_still_a_message() -> None:
    """As the non-streamed response: one (empty) message, so both shapes have the same items."""
    stream = ResponseStream("Agent", {})
    final = check_stream(stream.complete("", USAGE))
    assert [item["type"] for item in final["output"]] == ["message"]
    assert final["output"][0]["content"][0]["text"] == ""


def test_only_the_first_call_opens_the_stream() -> None:
    stream = ResponseStream("Agent", {})
    assert kinds(stream.tool_activity()) == ["response.created", "response.in_progress"]
    assert stream.tool_activity() == []
    assert kinds(stream.text("x"))[0] == "response.output_item.added"


def test_usage_carries_the_detail_fields_the_openai_types_require() -> None:
    assert USAGE == {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 17,
    }
