"""The proxy's policy seams end to end: request admission (403) and the tool-call hook on real streams."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import openai
import pytest

from tests.helpers import Celgate, OpenAIFactory, StartCelgate, assert_openai_error, write_policy
from tests.helpers.fakeupstream import FakeUpstream, Script, completion, tool_call_stream

MESSAGES = [{"role": "user", "content": "Hi"}]
POLICY = """\
version: 1
defaults:
  decision: allow
rules:
  - name: no-shell
    on: tool_call
    tools: ["shell*"]
    effect: deny
    reason: no shells
  - name: no-secrets
    on: tool_call
    tools: ["read_file"]
    when: tool.arguments.path.endsWith(".env")
    effect: deny
    action: error
    reason: no secrets
  - name: not-this-model
    on: request
    models: ["forbidden-*"]
    effect: deny
    reason: not this model
"""
WEATHER = ("call_w", "get_weather", '{"location": "Oslo"}')
SHELL = ("call_s", "shell.exec", '{"command": "rm -rf /"}')
READ_ENV = ("call_r", "read_file", '{"path": "/app/.env"}')
READ_OK = ("call_o", "read_file", '{"path": "/app/README.md"}')


@pytest.fixture
async def gated(upstream: FakeUpstream, start_celgate: StartCelgate, tmp_path: Path) -> Celgate:
    return await start_celgate(upstream=upstream.base_url, no_policy=False, policies=write_policy(tmp_path, POLICY))


async def test_a_denied_model_is_403(gated: Celgate, upstream: FakeUpstream, oai: OpenAIFactory) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        await oai(gated.url).chat.completions.create(model="forbidden-model", messages=MESSAGES)
    assert info.value.status_code == 403
    body = {"error": info.value.body}
    error = assert_openai_error(body, type_="policy_denied")
    assert "not this model" in error["message"]
    assert upstream.requests == []


async def test_stream_with_only_a_denied_call_ends_with_stop_and_the_reason(
    gated: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    upstream.push(Script(steps=tool_call_stream([SHELL])))
    stream = await oai(gated.url).chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert "no shells" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None


async def test_stream_with_an_allowed_and_a_denied_call(
    gated: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    steps = tool_call_stream([WEATHER, SHELL, READ_OK])
    upstream.push(Script(steps=steps))
    async with http.post(
        gated.url + "/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True}
    ) as r:
        body = await r.read()
    assert b"shell.exec" not in body and b"rm -rf" not in body
    kept = [s.data for s in steps if b"call_s" not in s.data and b'"index": 1,' not in s.data]
    before_stripped = [d for d in kept if b'"index": 2,' not in d]
    after_stripped = [d for d in kept if b'"index": 2,' in d]
    events = [e + b"\n\n" for e in body.split(b"\n\n") if e]
    # the call before the stripped one and everything else: byte-identical and in order
    assert [e for e in events if b'"index":1,' not in e] == before_stripped
    # the call after it: the same deltas, its index lowered to 1 so the client sees no gap
    lowered = [e for e in events if b'"index":1,' in e]
    assert [json.loads(e[6:]) for e in lowered] == [_with_index(json.loads(d[6:]), 1) for d in after_stripped]


def _with_index(chunk: dict, index: int) -> dict:
    chunk["choices"][0]["delta"]["tool_calls"][0]["index"] = index
    return chunk


async def test_stream_with_an_error_action_ends_with_an_error_event(
    gated: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, oai: OpenAIFactory
) -> None:
    upstream.push(Script(steps=tool_call_stream([READ_ENV])))
    async with http.post(
        gated.url + "/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True}
    ) as r:
        assert r.status == 200
        body = await r.read()
    assert b".env" not in body
    assert b"[DONE]" not in body
    event = body[body.index(b"event: error\n") :]
    error = assert_openai_error(json.loads(event.split(b"data: ", 1)[1]), type_="policy_denied")
    assert "no secrets" in error["message"]
    upstream.push(Script(steps=tool_call_stream([READ_ENV])))
    stream = await oai(gated.url).chat.completions.create(model="m", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError, match="no secrets"):
        [_ async for _ in stream]


async def test_non_stream_denied_call_is_stripped(gated: Celgate, upstream: FakeUpstream, oai: OpenAIFactory) -> None:
    upstream.push(
        Script(json=completion(None, tool_calls=[WEATHER, SHELL])), Script(json=completion(None, tool_calls=[SHELL]))
    )
    client = oai(gated.url)
    both = await client.chat.completions.create(model="m", messages=MESSAGES)
    assert [c.function.name for c in both.choices[0].message.tool_calls or []] == ["get_weather"]
    assert both.choices[0].finish_reason == "tool_calls"
    only = await client.chat.completions.create(model="m", messages=MESSAGES)
    assert only.choices[0].message.tool_calls is None
    assert only.choices[0].finish_reason == "stop"
    assert "no shells" in (only.choices[0].message.content or "")


async def test_non_stream_error_action_is_403(
    gated: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.push(Script(json=completion(None, tool_calls=[READ_ENV])))
    async with http.post(gated.url + "/chat/completions", json={"model": "m", "messages": MESSAGES}) as response:
        assert response.status == 403
        assert_openai_error(await response.json(), type_="policy_denied")


async def test_non_stream_allowed_calls_are_returned_byte_identical(
    gated: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    answer = completion(None, tool_calls=[WEATHER, READ_OK])
    upstream.push(Script(json=answer))
    async with http.post(gated.url + "/chat/completions", json={"model": "m", "messages": MESSAGES}) as response:
        assert await response.read() == json.dumps(answer).encode()


async def test_tools_that_can_never_be_used_are_not_offered_upstream(
    gated: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    tools = [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
        for n in ("get_weather", "shell.exec")
    ]
    async with http.post(
        gated.url + "/chat/completions",
        json={"model": "m", "messages": MESSAGES, "tools": tools, "tool_choice": "auto"},
    ) as response:
        assert response.status == 200
    offered = [t["function"]["name"] for t in upstream.requests[0].body["tools"]]
    assert offered == ["get_weather"]
