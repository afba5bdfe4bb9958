"""Responses ``instructions`` + ``input`` -> SDK input items: checked against the SDK's chat converter."""

from __future__ import annotations

from typing import Any

import pytest
from agents.models.chatcmpl_converter import Converter
from agents.models.fake_id import FAKE_RESPONSES_ID

from celgate.adapters.errors import MessageError
from celgate.adapters.responses_input import ResponsesConversation, last_user_text, to_input_items

# A conversation as a stateless Responses client resends it: earlier output items (with their ids) included.
INPUT: list[dict[str, Any]] = [
    {"role": "developer", "content": "Internal note."},
    {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "Weather in Paris?"},
            {"type": "input_image", "image_url": "https://example.com/map.png", "detail": "low"},
        ],
    },
    {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}],
    },
    {
        "id": "fc_1",
        "type": "function_call",
        "status": "completed",
        "call_id": "c1",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    },
    {"type": "function_call_output", "call_id": "c1", "output": "21 C"},
    {"role": "assistant", "content": "Paris is at 21 C."},
    {"role": "user", "content": "And tomorrow?"},
]


def test_instructions_and_input_reach_the_chat_model_as_messages() -> None:
    items = to_input_items({"instructions": "Answer in English.", "input": INPUT})
    assert Converter.items_to_messages(items) == [
        {"role": "system", "content": "Answer in English."},
        {"role": "developer", "content": "Internal note."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/map.png", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "21 C"},
        {"role": "assistant", "content": "Paris is at 21 C."},
        {"role": "user", "content": "And tomorrow?"},
    ]


def test_ids_of_earlier_responses_are_not_passed_on() -> None:
    """The agent's upstream never stored them; the assistant message gets the SDK's placeholder id instead."""
    items = to_input_items({"input": INPUT})
    assert [i.get("id") for i in items if "id" in i] == [FAKE_RESPONSES_ID, FAKE_RESPONSES_ID]
    assert items[3] == {
        "type": "function_call",
        "call_id": "c1",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }


def test_a_string_input_is_one_user_message() -> None:
    assert to_input_items({"input": "Hi"}) == [{"role": "user", "content": "Hi"}]
    assert to_input_items({"input": "Hi", "instructions": ""}) == [{"role": "user", "content": "Hi"}]


def test_last_user_text_takes_the_last_user_message() -> None:
    assert last_user_text({"input": INPUT}) == "And tomorrow?"
    assert last_user_text({"input": INPUT[:3]}) == "Weather in Paris?"
    assert last_user_text({"input": "Hello"}) == "Hello"
    with pytest.raises(MessageError, match="no user message"):
        last_user_text({"input": [{"role": "system", "content": "x"}]})


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "input must be a string or a non-empty list"),
        ({"input": []}, "input must be a string or a non-empty list"),
        ({"input": ["hi"]}, r"input\[0\] must be an object"),
        ({"input": "hi", "instructions": ["x"]}, "instructions must be a string"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "unsupported input item type 'item_reference'"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "unsupported input item type 'reasoning'"),
        ({"input": [{"role": "tool", "content": "x"}]}, "unsupported role 'tool'"),
        (
            {"input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]},
            "unsupported user content part 'output_text'",
        ),
        (
            {"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "u"}]}]},
            "unsupported system content part",
        ),
        (
            {"input": [{"role": "assistant", "content": [{"type": "input_text", "text": "x"}]}]},
            "unsupported assistant content part",
        ),
        ({"input": [{"role": "user", "content": 3}]}, "content must be a string or a list"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "needs call_id"),
        ({"input": [{"type": "function_call", "call_id": "c"}]}, "needs a name"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]}, "JSON string"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": 1}]}, "a string or a list"),
    ],
)
def test_malformed_input_is_a_400(body: dict[str, Any], error: str) -> None:
    with pytest.raises(MessageError, match=error) as raised:
        to_input_items(body)
    assert (raised.value.status, raised.value.code) == (400, "invalid_input")


@pytest.mark.parametrize("name", ["previous_response_id", "conversation"])
def test_continuing_server_side_state_is_refused(name: str) -> None:
    """A drop-in response is never stored: continuing one would silently drop the history."""
    with pytest.raises(MessageError, match=f"'{name}' is not supported") as raised:
        ResponsesConversation({"input": "hi", name: "resp_1"})
    assert (raised.value.status, raised.value.code) == (400, "unsupported_parameter")
