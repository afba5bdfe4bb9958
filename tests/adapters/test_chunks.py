"""Chunk and completion shapes are valid OpenAI objects; outputs normalise to text."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel

from agents import Usage
from celgate.adapters.chunks import ChunkFactory, completion, output_text, usage_dict


class Verdict(BaseModel):
    label: str


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        ("plain", "plain"),
        ({"output_text": "from builder", "output_parsed": {}}, "from builder"),
        (Verdict(label="ok"), '{"label":"ok"}'),
        ({"a": 1}, '{"a": 1}'),
        ([1, "é"], '[1, "é"]'),
    ],
)
def test_outputs_normalise_to_text(value: Any, text: str) -> None:
    assert output_text(value) == text


def test_every_chunk_is_a_valid_openai_chunk() -> None:
    factory = ChunkFactory("Agent")
    usage = usage_dict(Usage(requests=1, input_tokens=3, output_tokens=2, total_tokens=5))
    event = {"type": "tool_call", "id": "c1", "name": "t", "arguments": "{}", "agent": "a"}
    chunks = [factory.role(), factory.text("hi"), factory.event(event), factory.finish(), factory.usage(usage)]
    parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
    assert {c.id for c in parsed} == {factory.id}
    assert parsed[2].model_extra == {"celgate": event}
    assert parsed[2].choices[0].delta.content is None
    assert parsed[3].choices[0].finish_reason == "stop"
    assert parsed[4].choices == [] and parsed[4].usage is not None and parsed[4].usage.total_tokens == 5


def test_completion_is_a_valid_openai_completion() -> None:
    usage = usage_dict(Usage(requests=2, input_tokens=10, output_tokens=4, total_tokens=14))
    parsed = ChatCompletion.model_validate(completion("Agent", "done", usage))
    assert parsed.choices[0].message.content == "done"
    assert parsed.usage is not None and parsed.usage.prompt_tokens == 10
