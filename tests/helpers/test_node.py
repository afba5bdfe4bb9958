"""Each Node client script works against FakeUpstream on a real socket, with no celgate in between.

This pins what the scripts report and what the clients send, so a celgate test
that puts celgate between the two sees only celgate's own effect.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers import responses_wire as rw
from tests.helpers.fakeupstream import (
    FakeUpstream,
    Script,
    Step,
    text_stream,
    tool_call_stream,
)
from tests.helpers.node import NODE_PACKAGES, NodeEnv, run_node

pytestmark = pytest.mark.timeout(180)  # the first test may pay for the one npm install

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


HELPER_FIELDS = {"output_text", "output_parsed", "parsed", "parsed_arguments"}


def without_helper_fields(value: Any) -> Any:
    """openai-node's view of a response less what it adds itself (``output_text``; the stream helper's ``parsed*``)."""
    if isinstance(value, dict):
        return {k: without_helper_fields(v) for k, v in value.items() if k not in HELPER_FIELDS}
    if isinstance(value, list):
        return [without_helper_fields(v) for v in value]
    return value


async def test_the_install_is_pinned_and_cached(node_env: NodeEnv) -> None:
    assert (node_env.root / ".complete").exists() and node_env.root.name.startswith("celgate-node-")
    for name, version in NODE_PACKAGES.items():
        installed = json.loads((node_env.node_modules / name / "package.json").read_text())["version"]
        assert installed == version, name


# --- chat completions -----------------------------------------------------------------------------


async def test_chat_stream_helper_assembles_text(node_env: NodeEnv, upstream: FakeUpstream) -> None:
    result = await run_node("chat_stream", upstream.base_url, args={"prompt": "hi"})
    assert result["content"] == "Hello world" and result["content_deltas"] == ["Hello", " world"]
    assert result["finish_reason"] == "stop" and result["tool_calls"] == [] and result["usage"]["total_tokens"] == 14
    assert result["versions"]["openai"] == NODE_PACKAGES["openai"]
    assert upstream.requests[0].path == "/v1/chat/completions" and upstream.requests[0].body["stream"] is True


async def test_chat_stream_helper_assembles_tool_calls(node_env: NodeEnv, upstream: FakeUpstream) -> None:
    calls = [("call_1", "get_weather", '{"city":"Paris"}'), ("call_2", "get_weather", '{"city":"Rome"}')]
    upstream.push(Script(steps=tool_call_stream(calls)))
    result = await run_node("chat_stream", upstream.base_url, args={"tools": [WEATHER_TOOL]})
    assert [(c["id"], c["name"], c["arguments"]) for c in result["tool_calls"]] == calls
    assert [(d["index"], d["arguments"]) for d in result["arguments_done"]] == [
        (0, '{"city":"Paris"}'),
        (1, '{"city":"Rome"}'),
    ]
    assert result["finish_reason"] == "tool_calls" and result["content"] is None


async def test_run_tools_executes_the_js_tool_and_sends_its_result(node_env: NodeEnv, upstream: FakeUpstream) -> None:
    upstream.push(
        Script(steps=tool_call_stream([("call_1", "get_weather", '{"city":"Paris"}')])),
        Script(steps=text_stream(["It is", " sunny"])),
    )
    result = await run_node("chat_run_tools", upstream.base_url, args={"result": "sunny in Paris"})
    assert result["executed"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert result["tool_calls"] == [{"name": "get_weather", "arguments": '{"city":"Paris"}'}]
    assert result["content"] == "It is sunny" and result["completions"] == 2
    second = upstream.requests[1].body
    assert second["stream"] is True and second["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "sunny in Paris",
    }
    assert [m["role"] for m in result["messages"]] == ["user", "assistant", "tool", "assistant"]


async def test_run_tools_reports_no_execution_when_no_tool_is_called(node_env: NodeEnv, upstream: FakeUpstream) -> None:
    result = await run_node("chat_run_tools", upstream.base_url)
    assert result["executed"] == [] and result["content"] == "Hello world" and result["completions"] == 1


async def test_a_client_error_is_reported_not_crashed(node_env: NodeEnv, upstream: FakeUpstream) -> None:
    upstream.push(
        Script(status=403, json=rw.openai_error("denied by policy", type="permission_error", code="policy_denied"))
    )
    result = await run_node("chat_stream", upstream.base_url, expect_error=True)
    assert result["ok"] is False and result["error"]["status"] == 403 and result["error"]["code"] == "policy_denied"
    with pytest.raises(AssertionError, match="the client failed"):
        upstream.push(Script(status=403, json=rw.openai_error("denied")))
        await run_node("chat_stream", upstream.base_url)


# --- responses ------------------------------------------------------------------------------------


def every_item() -> list[rw.Item]:
    """One of each output item openai-node's accumulator handles (shell commands stream as added/done only)."""
    return [
        rw.reasoning_item(["Thinking."]),
        rw.message_item("Checking the weather now."),
        rw.function_call_item("call_f", "get_weather", '{"city":"Paris"}'),
        rw.custom_tool_call_item("call_c", "code_exec", "print(1)"),
        rw.shell_call_item("call_s"),
        rw.local_shell_call_item("call_l"),
        rw.apply_patch_call_item("call_p"),
        rw.computer_call_item("call_u"),
        rw.web_search_call_item(),
        rw.mcp_call_item(),
    ]


async def test_responses_create_returns_the_object(node_env: NodeEnv, upstream: FakeUpstream) -> None:
    body = rw.response_object(every_item())
    upstream.push(Script(json=body))
    result = await run_node("responses_create", upstream.base_url, args={"input": "hi"})
    assert without_helper_fields(result["response"]) == body and result["output_text"] == "Checking the weather now."
    assert upstream.requests[0].path == "/v1/responses" and "stream" not in upstream.requests[0].body


async def test_responses_create_stream_yields_every_event_as_sent(node_env: NodeEnv, upstream: FakeUpstream) -> None:
    events = rw.response_events(every_item(), shell_command_events=True)  # the raw iterator does not interpret them
    upstream.push(Script(steps=[Step(rw.frame(e)) for e in events]))
    result = await run_node("responses_create", upstream.base_url, args={"stream": True})
    assert result["events"] == events and result["response"] == events[-1]["response"]
    assert result["text"] == "Checking the weather now."
    assert upstream.requests[0].body["stream"] is True


async def test_responses_stream_helper_accumulates_the_snapshot(node_env: NodeEnv, upstream: FakeUpstream) -> None:
    items = every_item()
    kwargs: dict[str, Any] = {"id": rw.new_id("resp"), "created_at": 1741476542}
    upstream.push(Script(steps=rw.responses_steps(items, split_bytes=11, **kwargs)))
    result = await run_node("responses_stream", upstream.base_url)
    assert without_helper_fields(result["response"]) == rw.response_object(items, **kwargs)
    assert result["output_text"] == "Checking the weather now."
    assert result["text_snapshots"] == ["Checking", "Checking the", "Checking the weather", "Checking the weather now."]
    assert "".join(result["argument_deltas"]) == '{"city":"Paris"}' and len(result["argument_deltas"]) == 3
    assert result["types"] == [e["type"] for e in rw.response_events(items, **kwargs)]


async def test_responses_stream_helper_rejects_event_types_it_does_not_know(
    node_env: NodeEnv, upstream: FakeUpstream
) -> None:
    """Why ``shell_command_events`` is opt-in: openai-node 6's accumulator throws on them."""
    upstream.push(Script(steps=rw.responses_steps([rw.shell_call_item()], shell_command_events=True)))
    result = await run_node("responses_stream", upstream.base_url, expect_error=True)
    assert "Unhandled response stream event" in result["error"]["message"]


async def test_responses_default_answer_streams_for_the_helper(node_env: NodeEnv, upstream: FakeUpstream) -> None:
    result = await run_node("responses_stream", upstream.base_url, args={"model": "gpt-x"})
    assert result["output_text"] == "Hello world" and result["response"]["model"] == "gpt-x"


async def test_a_refused_continuation_reaches_the_node_client(node_env: NodeEnv) -> None:
    fake = FakeUpstream(enforce_tool_outputs=True)
    await fake.start()
    try:
        fake.push(Script(json=rw.response_object([rw.function_call_item("call_open")])))
        first = await run_node("responses_create", fake.base_url)
        refused = await run_node(
            "responses_create",
            fake.base_url,
            args={"previous_response_id": first["response"]["id"], "input": "next"},
            expect_error=True,
        )
        assert (
            refused["error"]["status"] == 400
            and refused["error"]["message"] == "400 No tool output found for function call call_open."
        )
        answered = await run_node(
            "responses_create",
            fake.base_url,
            args={
                "previous_response_id": first["response"]["id"],
                "input": [{"type": "function_call_output", "call_id": "call_open", "output": "ok"}],
            },
        )
        assert answered["output_text"] == "Hello world"
    finally:
        await fake.close()


# --- the Vercel AI SDK ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["generate", "stream"])
async def test_ai_sdk_default_provider_uses_responses_and_runs_the_tool(
    node_env: NodeEnv, upstream: FakeUpstream, mode: str
) -> None:
    call = rw.function_call_item("call_ai", "get_weather", '{"city":"Paris"}')
    answer = [rw.message_item("Let me look."), call]
    upstream.push(
        Script(steps=rw.responses_steps(answer)) if mode == "stream" else Script(json=rw.response_object(answer))
    )
    result = await run_node("ai_sdk", upstream.base_url, args={"mode": mode})
    assert result["provider"] == "openai.responses"
    assert (
        result["versions"]["ai"] == NODE_PACKAGES["ai"]
        and result["versions"]["@ai-sdk/openai"] == NODE_PACKAGES["@ai-sdk/openai"]
    )
    assert result["tool_calls"] == [{"toolCallId": "call_ai", "toolName": "get_weather", "input": {"city": "Paris"}}]
    assert result["executed"] == [{"name": "get_weather", "toolCallId": "call_ai", "input": {"city": "Paris"}}]
    assert result["text"] == "Let me look." and result["finish_reason"] == "tool-calls" and result["steps"] == 1
    request = upstream.requests[0]
    assert request.path == "/v1/responses" and request.body["tools"][0]["name"] == "get_weather"
    assert request.body.get("stream", False) is (mode == "stream") and len(upstream.requests) == 1


@pytest.mark.parametrize("mode", ["generate", "stream"])
async def test_ai_sdk_sends_the_tool_result_on_the_next_step(node_env: NodeEnv, mode: str) -> None:
    """Two steps against a store that enforces tool outputs, as the real API would: the SDK's second request passes."""
    fake = FakeUpstream(enforce_tool_outputs=True)
    await fake.start()
    try:
        call = rw.function_call_item("call_two", "get_weather", '{"city":"Rome"}')
        final = [rw.message_item("It is sunny in Rome.")]
        if mode == "stream":
            fake.push(Script(steps=rw.responses_steps([call])), Script(steps=rw.responses_steps(final)))
        else:
            fake.push(Script(json=rw.response_object([call])), Script(json=rw.response_object(final)))
        result = await run_node("ai_sdk", fake.base_url, args={"mode": mode, "maxSteps": 2, "result": "sunny"})
        assert result["executed"] == [{"name": "get_weather", "toolCallId": "call_two", "input": {"city": "Rome"}}]
        assert result["text"] == "It is sunny in Rome." and result["steps"] == 2 and result["finish_reason"] == "stop"
        second = fake.requests[1].body["input"]
        outputs = [i for i in second if i.get("type") == "function_call_output"]
        assert [(o["call_id"], o["output"]) for o in outputs] == [("call_two", "sunny")]  # a string result goes as is
    finally:
        await fake.close()


async def test_ai_sdk_reports_text_and_no_execution_without_a_call(node_env: NodeEnv, upstream: FakeUpstream) -> None:
    result = await run_node("ai_sdk", upstream.base_url, args={"mode": "stream"})
    assert result["text"] == "Hello world" and result["executed"] == [] and result["tool_calls"] == []
    assert result["finish_reason"] == "stop"
