"""Chat messages -> SDK input items: checked against the SDK's own reverse converter."""

from __future__ import annotations

import pytest
from agents.models.chatcmpl_converter import Converter

from celgate.adapters.errors import MessageError
from celgate.adapters.messages import last_user_text, to_input_items

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "developer", "content": [{"type": "text", "text": "Internal note."}]},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Weather in Paris and Rome?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/map.png", "detail": "low"}},
        ],
    },
    {
        "role": "assistant",
        "content": "Checking both.",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "21 C"},
    {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "25 C"}]},
    {"role": "assistant", "content": "Paris 21 C, Rome 25 C."},
    {
        "role": "assistant",
        "tool_calls": [
            {"id": "c3", "type": "function", "function": {"name": "convert_units", "arguments": '{"c": 21}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "c3", "content": "69.8 F"},
    {"role": "user", "content": "And tomorrow?"},
]


def test_conversation_round_trips_through_the_sdk_converter() -> None:
    assert Converter.items_to_messages(to_input_items(CONVERSATION)) == CONVERSATION


def test_tool_calls_become_function_call_items() -> None:
    items = to_input_items(CONVERSATION)
    calls = [i for i in items if i.get("type") == "function_call"]
    outputs = [i for i in items if i.get("type") == "function_call_output"]
    assert [(c["call_id"], c["name"]) for c in calls] == [
        ("c1", "get_weather"),
        ("c2", "get_weather"),
        ("c3", "convert_units"),
    ]
    assert [o["call_id"] for o in outputs] == ["c1", "c2", "c3"]


def test_missing_tool_arguments_become_an_empty_object() -> None:
    message = {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": ""}}]}
    assert to_input_items([message])[1]["arguments"] == "{}"


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([], "non-empty list"),
        ("hi", "non-empty list"),
        ([{"role": "function", "content": "x"}], "unsupported role 'function'"),
        ([{"role": "tool", "content": "x"}], "needs tool_call_id"),
        ([{"role": "user", "content": [{"type": "video", "video": "x"}]}], "unsupported user content part"),
        ([{"role": "system", "content": [{"type": "image_url"}]}], "only text content parts"),
        ([{"role": "assistant", "tool_calls": [{"id": "c"}]}], "function name"),
        ([{"role": "user", "content": 42}], "string or a list"),
    ],
)
def test_malformed_messages_are_rejected_with_their_index(messages: object, error: str) -> None:
    with pytest.raises(MessageError, match=error) as raised:
        to_input_items(messages)
    assert (raised.value.status, raised.value.type, raised.value.code) == (
        400,
        "invalid_request_error",
        "invalid_messages",
    )


def test_last_user_text_takes_the_last_user_message_text_parts() -> None:
    assert last_user_text(CONVERSATION) == "And tomorrow?"
    assert last_user_text(CONVERSATION[:4]) == "Weather in Paris and Rome?"
    with pytest.raises(MessageError, match="no user message"):
        last_user_text([{"role": "system", "content": "x"}])
