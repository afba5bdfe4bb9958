"""The Responses API through celgate: admission, call items decided stream and non-stream, stored state.

Driven by the real ``openai`` client (``responses.create`` stream and not,
the ``responses.stream`` helper, ``responses.retrieve``) against a scripted
upstream that speaks the wire format exactly (tests/helpers/responses_wire).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.helpers import Celgate, OpenAIFactory, StartCelgate, write_policy
from tests.helpers import responses_wire as rw
from tests.helpers.fakeupstream import FakeUpstream, ResponsesStore, Script

POLICY = """\
version: 1
defaults:
  decision: deny
rules:
  - name: no-web-search
    on: request
    when: '"web_search" in request.tools'
    effect: deny
    reason: no web search here
  - name: only-our-mcp
    on: request
    when: request.tool_definitions.exists(t, t.type == "mcp" && t.server_url != "https://mcp.example.com/")
    effect: deny
    reason: only our MCP server
  - name: requests
    on: request
    effect: allow
  - name: explode-fails-everything
    on: tool_call
    tools: ["explode"]
    effect: deny
    action: error
  - name: weather-in-paris-only
    on: tool_call
    tools: ["get_weather"]
    when: tool.arguments.city == "Paris"
    effect: allow
  - name: lookups
    on: tool_call
    tools: ["lookup", "patcher"]
    effect: allow
  - name: shell-reads-only
    on: tool_call
    tools: ["local_shell"]
    when: tool.type == "local_shell" && tool.arguments.command[0] == "ls"
    effect: allow
"""
TOOLS = [
    {"type": "function", "name": n, "parameters": {"type": "object", "properties": {}}}
    for n in ("get_weather", "lookup", "shell.exec")
]


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    return write_policy(tmp_path, POLICY)


@pytest.fixture
async def gate(upstream: FakeUpstream, start_celgate: StartCelgate, policies: Path) -> Celgate:
    return await start_celgate(upstream=upstream.base_url, no_policy=False, policies=policies)


def calls(output: list[Any]) -> list[str]:
    return [getattr(item, "name", None) or item.type for item in output if item.type != "message"]


PARIS = rw.function_call_item("call_p", "get_weather", '{"city":"Paris"}')
ROME = rw.function_call_item("call_r", "get_weather", '{"city":"Rome"}')
LOOKUP = rw.function_call_item("call_l", "lookup", '{"q":"x"}')
SHELL = rw.function_call_item("call_s", "shell.exec", '{"cmd":"rm -rf /"}')


async def test_non_stream_strips_denied_calls_and_keeps_the_rest(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    upstream.push(Script(json=rw.response_object([rw.message_item("hi"), PARIS, ROME, LOOKUP])))
    response = await oai(gate.url).responses.create(model="m", input="weather?", tools=TOOLS)  # type: ignore[arg-type]
    assert calls(response.output) == ["get_weather", "lookup"]
    assert next(i.arguments for i in response.output if i.type == "function_call") == '{"city":"Paris"}'


async def test_when_nothing_callable_remains_a_message_explains(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    upstream.push(Script(json=rw.response_object([ROME])))
    response = await oai(gate.url).responses.create(model="m", input="weather?", tools=TOOLS)  # type: ignore[arg-type]
    assert calls(response.output) == []
    assert "denied by policy" in response.output_text and "weather-in-paris-only" not in calls(response.output)


async def test_action_error_is_a_403(gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory) -> None:
    upstream.push(Script(json=rw.response_object([rw.function_call_item("c", "explode", "{}")])))
    with pytest.raises(openai.PermissionDeniedError):
        await oai(gate.url).responses.create(model="m", input="x")


@pytest.mark.parametrize("split", [1, 3, 7])
async def test_stream_never_shows_a_denied_call(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, split: int
) -> None:
    output = [rw.message_item("checking"), SHELL, PARIS, rw.reasoning_item(), ROME, LOOKUP, rw.message_item("done")]
    upstream.push(Script(steps=rw.responses_steps(output, split_arguments=split)))
    stream = await oai(gate.url).responses.create(model="m", input="x", tools=TOOLS, stream=True)  # type: ignore[arg-type]
    events = [event async for event in stream]
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(set(numbers))
    seen = json.dumps([e.model_dump() for e in events])
    assert "shell.exec" not in seen and "Rome" not in seen
    final = events[-1].response  # type: ignore[union-attr]
    assert calls(final.output) == ["get_weather", "reasoning", "lookup"]
    added = [e.output_index for e in events if e.type == "response.output_item.added"]
    assert added == list(range(len(final.output)))


async def test_the_stream_helper_accepts_the_stream(gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory) -> None:
    upstream.push(Script(steps=rw.responses_steps([SHELL, rw.message_item("after"), PARIS])))
    async with oai(gate.url).responses.stream(model="m", input="x", tools=TOOLS) as stream:  # type: ignore[arg-type]
        async for _ in stream:
            pass
        final = await stream.get_final_response()
    assert calls(final.output) == ["get_weather"] and final.output_text == "after"


async def test_a_stream_whose_calls_are_all_denied_ends_with_the_deny_message(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    upstream.push(Script(steps=rw.responses_steps([SHELL, ROME])))
    async with oai(gate.url).responses.stream(model="m", input="x", tools=TOOLS) as stream:  # type: ignore[arg-type]
        texts = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert calls(final.output) == [] and "denied by policy" in "".join(texts) == final.output_text


async def test_action_error_ends_a_stream_with_an_error_event(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.push(Script(steps=rw.responses_steps([rw.function_call_item("c", "explode", "{}")])))
    async with http.post(gate.url + "/responses", json={"model": "m", "input": "x", "stream": True}) as response:
        out = await response.read()
    assert b"event: error" in out and b"policy_denied" in out and b"explode" not in out.split(b"event: error")[0]


@pytest.mark.parametrize(
    "item",
    [
        rw.local_shell_call_item(command=["rm", "-rf", "/"]),
        rw.custom_tool_call_item(name="shell.exec", input="rm -rf /"),
        rw.shell_call_item(commands=["rm -rf /"]),
        rw.apply_patch_call_item(),
    ],
    ids=["local_shell", "custom", "shell", "apply_patch"],
)
async def test_client_executed_builtins_pass_the_tool_call_point(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, item: dict[str, Any]
) -> None:
    upstream.push(Script(json=rw.response_object([item])), Script(steps=rw.responses_steps([item])))
    client = oai(gate.url)
    response = await client.responses.create(model="m", input="x")
    assert [i.type for i in response.output] == ["message"]
    stream = await client.responses.create(model="m", input="x", stream=True)
    events = [event async for event in stream]
    assert all(getattr(e, "item", None) is None or e.item.type == "message" for e in events)  # type: ignore[union-attr]


async def test_an_allowed_builtin_passes(gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory) -> None:
    item = rw.local_shell_call_item(command=["ls", "-l"])
    upstream.push(Script(json=rw.response_object([item])))
    response = await oai(gate.url).responses.create(model="m", input="x")
    assert [i.type for i in response.output] == ["local_shell_call"]


@pytest.mark.parametrize(
    ("tools", "reason"),
    [
        ([{"type": "web_search"}], "no web search"),
        ([{"type": "mcp", "server_label": "x", "server_url": "https://evil.example/"}], "only our MCP"),
    ],
)
async def test_hosted_tools_are_judged_at_admission(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, tools: list[dict[str, Any]], reason: str
) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        await oai(gate.url).responses.create(model="m", input="x", tools=tools)  # type: ignore[arg-type]
    assert reason in str(info.value)
    assert upstream.requests == []


async def test_tools_no_rule_could_allow_are_removed_before_the_request_goes_up(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    await oai(gate.url).responses.create(
        model="m", input="x", tools=TOOLS, tool_choice={"type": "function", "name": "shell.exec"}
    )  # type: ignore[arg-type]
    sent = upstream.requests[-1].body
    assert [t["name"] for t in sent["tools"]] == ["get_weather", "lookup"] and "tool_choice" not in sent


async def test_stored_responses_are_filtered_when_read_back(
    start_celgate: StartCelgate, policies: Path, oai: OpenAIFactory
) -> None:
    fake = FakeUpstream(store=True)
    await fake.start()
    try:
        gate = await start_celgate(upstream=fake.base_url, no_policy=False, policies=policies)
        fake.push(Script(json=rw.response_object([SHELL, LOOKUP])))
        client = oai(gate.url)
        created = await client.responses.create(model="m", input="x", tools=TOOLS)  # type: ignore[arg-type]
        stored = await client.responses.retrieve(created.id)
        assert calls(stored.output) == ["lookup"]
    finally:
        await fake.close()


async def test_a_follow_up_after_a_strip_continues_on_another_celgate(
    start_celgate: StartCelgate, policies: Path, oai: OpenAIFactory, tmp_path: Path
) -> None:
    """The upstream demands an answer to every call it produced; celgate answers the ones it stripped.

    Two celgate instances share nothing but the upstream: the follow-up lands on the other one, which
    re-decides the stored calls and audits those decisions like any other.
    """
    audit = tmp_path / "audit.jsonl"
    store = ResponsesStore()
    fake = FakeUpstream(store=store, enforce_tool_outputs=True)
    await fake.start()
    try:
        first = await start_celgate(upstream=fake.base_url, no_policy=False, policies=policies)
        second = await start_celgate(
            upstream=fake.base_url, no_policy=False, policies=policies, audit_log=str(audit), audit_allows=True
        )
        fake.push(Script(json=rw.response_object([SHELL, LOOKUP])))
        created = await oai(first.url).responses.create(model="m", input="x", tools=TOOLS)  # type: ignore[arg-type]
        [lookup] = [i for i in created.output if i.type == "function_call"]
        follow_up = await oai(second.url).responses.create(
            model="m",
            previous_response_id=created.id,
            tools=TOOLS,  # type: ignore[arg-type]
            input=[{"type": "function_call_output", "call_id": lookup.call_id, "output": "42"}],
        )
        assert follow_up.status == "completed"
        sent = fake.requests[-1].body["input"]
        answer = next(i for i in sent if i.get("call_id") == "call_s")
        assert answer["type"] == "function_call_output" and "denied by policy" in answer["output"]
        await second.stop()  # flushes the audit log
        records = [json.loads(line) for line in audit.read_text().splitlines()]
        [redecided] = [r for r in records if r["point"] == "tool_call"]  # the client answered call_l itself
        assert (redecided["effect"], redecided["tool_call_id"], redecided["source"]) == ("deny", "call_s", "stored")
    finally:
        await fake.close()


async def test_a_conversation_follow_up_answers_the_stripped_call(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    """With ``conversation``, celgate reads the conversation's recent items back and answers what it stripped."""
    answered = rw.function_call_item("call_ok", "lookup", "{}")
    items = {"object": "list", "data": [SHELL, rw.tool_output(answered, "42"), answered], "has_more": False}
    upstream.push(Script(json=items))
    await oai(gate.url).responses.create(model="m", conversation="conv_123", input="go on", tools=TOOLS)  # type: ignore[arg-type]
    fetch, create = upstream.requests
    assert fetch.method == "GET" and fetch.raw_path.startswith("/v1/conversations/conv_123/items?")
    sent = create.body["input"]
    assert [i.get("call_id") for i in sent if i.get("type") == "function_call_output"] == ["call_s"]
    assert "denied by policy" in sent[0]["output"] and sent[-1]["content"] == "go on"


async def test_an_unsafe_state_id_is_a_400(gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory) -> None:
    for field in ("previous_response_id", "conversation"):
        with pytest.raises(openai.BadRequestError):
            await oai(gate.url).responses.create(model="m", input="x", **{field: "../../v1/chat/completions"})
    assert upstream.requests == []
