"""Chat completions beyond ``tools``.

Legacy functions, custom tools, the role of a stripped first call, stored objects.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.helpers import ALLOW_REQUESTS, Celgate, OpenAIFactory
from tests.helpers.fakeupstream import FakeUpstream, Script, Step, chat_chunk, completion, sse

MESSAGES = [{"role": "user", "content": "hi"}]
POLICY = (
    ALLOW_REQUESTS
    + """\
  - name: safe-tools
    on: tool_call
    tools: ["get_weather", "grammar_check"]
    effect: allow
  - name: custom-sql-reads
    on: tool_call
    tools: ["sql"]
    when: tool.type == "custom" && tool.raw_arguments.startsWith("SELECT")
    effect: allow
"""
)


def legacy_completion(name: str, arguments: str) -> dict[str, Any]:
    body = completion(None)
    body["choices"][0]["message"]["function_call"] = {"name": name, "arguments": arguments}
    body["choices"][0]["finish_reason"] = "function_call"
    return body


FUNCTIONS = [{"name": n, "parameters": {"type": "object", "properties": {}}} for n in ("get_weather", "shell_exec")]


async def test_legacy_functions_are_stripped_from_the_request(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    await oai(gate.url).chat.completions.create(
        model="m",
        messages=MESSAGES,
        functions=FUNCTIONS,  # type: ignore[arg-type]
        function_call={"name": "shell_exec"},
    )
    sent = upstream.requests[-1].body
    assert [f["name"] for f in sent["functions"]] == ["get_weather"] and "function_call" not in sent


@pytest.mark.parametrize(("name", "kept"), [("get_weather", True), ("shell_exec", False)])
async def test_a_legacy_function_call_is_decided(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, name: str, kept: bool
) -> None:
    upstream.push(Script(json=legacy_completion(name, "{}")))
    answer = await oai(gate.url).chat.completions.create(model="m", messages=MESSAGES, functions=FUNCTIONS)  # type: ignore[arg-type]
    choice = answer.choices[0]
    if kept:
        assert choice.message.function_call is not None and choice.finish_reason == "function_call"
    else:
        assert choice.message.function_call is None and choice.finish_reason == "stop"
        assert "shell_exec denied by policy" in (choice.message.content or "")


def legacy_stream(name: str) -> list[Step]:
    return [
        Step(sse(chat_chunk({"role": "assistant", "content": None, "function_call": {"name": name, "arguments": ""}}))),
        Step(sse(chat_chunk({"function_call": {"arguments": '{"a":'}}))),
        Step(sse(chat_chunk({"function_call": {"arguments": "1}"}}))),
        Step(sse(chat_chunk({}, "function_call"))),
        Step(b"data: [DONE]\n\n"),
    ]


@pytest.mark.parametrize(("name", "kept"), [("get_weather", True), ("shell_exec", False)])
async def test_a_streamed_legacy_function_call_is_decided(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, name: str, kept: bool
) -> None:
    upstream.push(Script(steps=legacy_stream(name)))
    stream = await oai(gate.url).chat.completions.create(
        model="m",
        messages=MESSAGES,
        functions=FUNCTIONS,  # type: ignore[arg-type]
        stream=True,
    )
    chunks = [c async for c in stream]
    names = [
        c.choices[0].delta.function_call.name
        for c in chunks
        if c.choices and c.choices[0].delta.function_call and c.choices[0].delta.function_call.name
    ]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    roles = [c.choices[0].delta.role for c in chunks if c.choices and c.choices[0].delta.role]
    assert roles == ["assistant"]  # the role survives the strip
    assert (names, finishes) == (([name], ["function_call"]) if kept else ([], ["stop"]))


CUSTOM_TOOLS = [
    {"type": "custom", "custom": {"name": "sql", "description": "run SQL"}},
    {"type": "custom", "custom": {"name": "grammar_check"}},
]


def custom_completion(name: str, text: str) -> dict[str, Any]:
    body = completion(None)
    body["choices"][0]["message"]["tool_calls"] = [
        {"id": "c1", "type": "custom", "custom": {"name": name, "input": text}}
    ]
    body["choices"][0]["finish_reason"] = "tool_calls"
    return body


@pytest.mark.parametrize(("text", "kept"), [("SELECT 1", True), ("DROP TABLE users", False)])
async def test_custom_tools_are_decided_by_name_with_their_input(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, text: str, kept: bool
) -> None:
    upstream.push(Script(json=custom_completion("sql", text)))
    answer = await oai(gate.url).chat.completions.create(model="m", messages=MESSAGES, tools=CUSTOM_TOOLS)  # type: ignore[arg-type]
    message = answer.choices[0].message
    assert bool(message.tool_calls) is kept
    if not kept:
        assert "sql denied by policy" in (message.content or "") and "model" not in (message.content or "")
    assert [t["custom"]["name"] for t in upstream.requests[-1].body["tools"]] == ["sql", "grammar_check"]


@pytest.mark.parametrize(("text", "kept"), [("SELECT 1", True), ("DROP TABLE users", False)])
async def test_streamed_custom_tool_calls_are_decided(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, text: str, kept: bool
) -> None:
    steps = [
        Step(
            sse(
                chat_chunk(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"index": 0, "id": "c1", "type": "custom", "custom": {"name": "sql", "input": ""}}
                        ],
                    }
                )
            )
        ),
        *[
            Step(sse(chat_chunk({"tool_calls": [{"index": 0, "custom": {"input": piece}}]})))
            for piece in text.split(" ")
        ],
        Step(sse(chat_chunk({}, "tool_calls"))),
        Step(b"data: [DONE]\n\n"),
    ]
    upstream.push(Script(steps=steps))
    body = {"model": "m", "messages": MESSAGES, "tools": CUSTOM_TOOLS, "stream": True}
    async with http.post(gate.url + "/chat/completions", json=body) as response:
        out = await response.read()
    assert (b'"custom"' in out) is kept
    assert b'"role":"assistant"' in out.replace(b" ", b"")


async def test_stored_completions_are_filtered_when_read_back(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    stored = completion(None, tool_calls=[("c1", "shell_exec", "{}"), ("c2", "get_weather", "{}")])
    message = stored["choices"][0]["message"]
    upstream.push(
        Script(json=stored),
        Script(json={"object": "list", "data": [stored], "has_more": False}),
        Script(
            json={
                "object": "list",
                "data": [{"id": "m1", "role": "assistant", "content": None, "tool_calls": message["tool_calls"]}],
            }
        ),
    )
    for path in ("/chat/completions/chatcmpl-1", "/chat/completions", "/chat/completions/chatcmpl-1/messages"):
        async with http.get(gate.url + path) as response:
            assert response.status == 200
            text = await response.text()
        assert 'shell_exec"' not in text.replace("shell_exec denied", "") and "get_weather" in text, (path, text)
    assert json.loads(text)["data"][0]["tool_calls"][0]["function"]["name"] == "get_weather"
