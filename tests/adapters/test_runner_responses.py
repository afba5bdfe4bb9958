"""Drop-ins run for Responses requests with the real SDK against the scripted fake gateway (real sockets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openai.types.responses import Response

from agents import OpenAIChatCompletionsModel, OpenAIResponsesModel
from celgate.adapters import AgentRegistry, AgentRunError, run_response, stream_response
from celgate.adapters.gateway import GatewayProvider
from tests.helpers.responses_wire import MESSAGE_EVENT_TYPES, check_stream

from .conftest import (
    STRUCTURED_WORKFLOW,
    WORKFLOW,
    Error,
    FakeGateway,
    FakeHooks,
    Text,
    ToolCalls,
    caller_for,
    collect,
    write_agent,
)


def responses_body(model: str, input: Any = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": model, "input": input, **extra}


async def test_a_response_holds_the_final_answer_and_no_calls(
    tools: AgentRegistry, gateway: FakeGateway, hooks: FakeHooks
) -> None:
    hooks.deny.add("danger")
    gateway.reply(ToolCalls([("c1", "safe", '{"x": 1}'), ("c2", "danger", '{"x": 2}')]), Text("done"))
    agent = tools.get("Tools")
    body = responses_body("Tools", [{"role": "user", "content": "go"}], instructions="Be quick.", metadata={"k": "v"})
    parsed = Response.model_validate(await run_response(agent, body, caller_for(gateway, "Tools")))
    assert [item.type for item in parsed.output] == ["message"]
    assert (parsed.output_text, parsed.model, parsed.instructions, parsed.metadata) == (
        "done",
        "Tools",
        "Be quick.",
        {"k": "v"},
    )
    assert parsed.usage is not None and parsed.usage.total_tokens == 30  # both model calls
    assert agent.module.RAN == [("safe", 1)]  # the denied tool never ran
    sent = gateway.requests[0].body["messages"]
    assert sent[0] == {"role": "system", "content": "Use tools."}  # the agent's instructions, then the request's
    assert sent[1:] == [{"role": "system", "content": "Be quick."}, {"role": "user", "content": "go"}]


async def test_a_stream_is_well_formed_and_shows_no_calls(tools: AgentRegistry, gateway: FakeGateway) -> None:
    gateway.reply(ToolCalls([("c1", "safe", '{"x": 7}')]), Text("Seven."))
    events = await collect(
        stream_response(tools.get("Tools"), responses_body("Tools", stream=True), caller_for(gateway, "Tools"))
    )
    final = check_stream(events)
    assert {e["type"] for e in events} <= MESSAGE_EVENT_TYPES
    assert [item["type"] for item in final["output"]] == ["message"]
    assert Response.model_validate(final).output_text == "Seven. "
    assert final["usage"]["total_tokens"] == 30
    assert all(r.body["stream"] for r in gateway.requests)  # the agent's own model calls stream too


async def test_a_failure_before_any_output_raises_before_the_first_event(
    tools: AgentRegistry, gateway: FakeGateway
) -> None:
    gateway.reply(Error(403, "celgate: denied"))
    stream = stream_response(tools.get("Tools"), responses_body("Tools", stream=True), caller_for(gateway, "Tools"))
    with pytest.raises(AgentRunError) as raised:
        await anext(stream)
    assert (raised.value.status, raised.value.code) == (403, "policy_denied")


async def test_a_failure_after_output_raises_mid_stream_without_completing(
    tools: AgentRegistry, gateway: FakeGateway
) -> None:
    gateway.reply(ToolCalls([("c1", "safe", '{"x": 1}')]), Error(403, "celgate: denied"))
    received: list[dict[str, Any]] = []
    with pytest.raises(AgentRunError) as raised:
        async for event in stream_response(
            tools.get("Tools"), responses_body("Tools", stream=True), caller_for(gateway, "Tools")
        ):
            received.append(event)
    assert raised.value.status == 403
    assert [e["type"] for e in received] == ["response.created", "response.in_progress"]  # started by the tool call


@pytest.mark.parametrize("stream", [False, True])
async def test_malformed_input_is_a_400_before_the_agent_runs(
    tools: AgentRegistry, gateway: FakeGateway, stream: bool
) -> None:
    body = responses_body("Tools", [{"type": "item_reference", "id": "msg_1"}], stream=stream)
    with pytest.raises(AgentRunError) as raised:
        if stream:
            await anext(stream_response(tools.get("Tools"), body, caller_for(gateway, "Tools")))
        else:
            await run_response(tools.get("Tools"), body, caller_for(gateway, "Tools"))
    assert (raised.value.status, raised.value.type, raised.value.code) == (
        400,
        "invalid_request_error",
        "invalid_input",
    )
    assert gateway.requests == []


async def test_a_workflow_takes_the_last_user_text_and_streams_its_answer(
    tmp_path: Path, gateway: FakeGateway, make_registry: Any
) -> None:
    write_agent(tmp_path, "Flow", WORKFLOW)
    registry = await make_registry(tmp_path)
    gateway.reply(
        Text('{"department": "billing"}'),
        ToolCalls([("h1", "transfer_to_billing", "{}")]),
        ToolCalls([("c1", "get_invoice", '{"invoice_id": "INV-1"}')]),
        Text("INV-1 is paid."),
    )
    history = [
        {"role": "user", "content": "old question"},
        {"role": "assistant", "content": "old answer"},
        {"role": "user", "content": [{"type": "input_text", "text": "Is INV-1 paid?"}]},
    ]
    events = await collect(
        stream_response(registry.get("Flow"), responses_body("Flow", history, stream=True), caller_for(gateway, "Flow"))
    )
    final = check_stream(events)
    assert Response.model_validate(final).output_text == "INV-1 is paid. "  # the classifier's JSON is not streamed
    assert [m["content"] for m in gateway.requests[0].body["messages"] if m["role"] == "user"] == ["Is INV-1 paid?"]


async def test_a_structured_output_is_sent_once_at_the_end(
    tmp_path: Path, gateway: FakeGateway, make_registry: Any
) -> None:
    write_agent(
        tmp_path,
        "Fixed",
        STRUCTURED_WORKFLOW,
    )
    registry = await make_registry(tmp_path)
    events = await collect(
        stream_response(
            registry.get("Fixed"), responses_body("Fixed", "four", stream=True), caller_for(gateway, "Fixed")
        )
    )
    assert Response.model_validate(check_stream(events)).output_text == '{"value":4}'


@pytest.mark.parametrize(
    ("api", "model_type"), [("chat", OpenAIChatCompletionsModel), ("responses", OpenAIResponsesModel)]
)
async def test_the_agents_api_setting_picks_the_model_class(
    tmp_path: Path, gateway: FakeGateway, make_registry: Any, api: str, model_type: type
) -> None:
    write_agent(tmp_path, "Plain", 'from agents import Agent\nagent = Agent(name="p")\n')
    registry = await make_registry(tmp_path, api=api)
    agent = registry.get("Plain")
    provider = GatewayProvider(agent.runtime.clients.get(gateway.url), agent)
    assert type(provider.get_model(None)) is model_type
