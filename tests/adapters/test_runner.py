"""Running drop-ins with the real SDK against the scripted fake gateway (real sockets)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from celgate.adapters import AgentRegistry, AgentRunError, run_completion, stream_completion

from .conftest import (
    STRUCTURED_WORKFLOW,
    TOOLS_AGENT,
    WORKFLOW,
    Error,
    FakeGateway,
    FakeHooks,
    InBandError,
    Text,
    ToolCalls,
    caller_for,
    collect,
    write_agent,
)
from .test_messages import CONVERSATION


def chat(model: str, messages: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": messages or [{"role": "user", "content": "hi"}], **extra}


def content(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def events(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["celgate"] for c in chunks if "celgate" in c]


def tool_messages(gateway: FakeGateway, request: int) -> dict[str, Any]:
    return {m["tool_call_id"]: m["content"] for m in gateway.requests[request].body["messages"] if m["role"] == "tool"}


async def test_whole_conversation_reaches_the_model(tmp_path: Path, gateway: FakeGateway, make_registry: Any) -> None:
    write_agent(tmp_path, "Plain", 'from agents import Agent\nagent = Agent(name="p", instructions="Inst.")\n')
    registry = await make_registry(tmp_path)
    gateway.reply(Text("Cloudy."))
    result = await run_completion(registry.get("Plain"), chat("Plain", CONVERSATION), caller_for(gateway, "Plain"))
    sent = gateway.requests[0].body["messages"]
    assert sent[0] == {"role": "system", "content": "Inst."}
    assert sent[1:] == CONVERSATION
    assert result["choices"][0]["message"]["content"] == "Cloudy."
    assert result["model"] == "Plain"
    assert result["usage"]["total_tokens"] == 15


async def test_model_calls_carry_the_callers_identity(tmp_path: Path, gateway: FakeGateway, make_registry: Any) -> None:
    write_agent(
        tmp_path,
        "Routed",
        'from agents import Agent\n__celgate__ = {"upstream": "http://other:9000/v1"}\nagent = Agent(name="r")\n',
    )
    registry = await make_registry(tmp_path)
    gateway.reply(Text("a"), Text("b"))
    agent = registry.get("Routed")
    await run_completion(agent, chat("Routed"), caller_for(gateway, "Routed"))
    await run_completion(agent, chat("Routed"), caller_for(gateway, "Routed", authorization=None))
    with_key, anonymous = (r.headers for r in gateway.requests)
    assert with_key["authorization"] == "Bearer sk-alice"
    assert with_key["x-celgate-agent"] == "Routed"
    assert with_key["x-request-id"] == "req-123"
    assert with_key["x-celgate-internal"] == "internal-token"
    assert with_key["x-celgate-upstream"] == "http://other:9000/v1"
    assert "authorization" not in anonymous


@pytest.mark.parametrize(
    ("model_line", "default_model", "sent_model"),
    [
        ('model="gpt-5"', None, "gpt-5"),  # the SDK would add reasoning_effort=low, verbosity=low
        ("", "gpt-5.1", "gpt-5.1"),  # no model: the SDK's gpt-5.x defaults would apply
        ("", "llama3", "llama3"),
    ],
)
async def test_sdk_reasoning_defaults_are_not_sent(
    tmp_path: Path,
    gateway: FakeGateway,
    make_registry: Any,
    model_line: str,
    default_model: str | None,
    sent_model: str,
) -> None:
    write_agent(tmp_path, "Five", f'from agents import Agent\nagent = Agent(name="f", {model_line})\n')
    registry = await make_registry(tmp_path, default_model=default_model)
    gateway.reply(Text("ok"), Text("ok"))
    agent = registry.get("Five")
    await run_completion(agent, chat("Five"), caller_for(gateway, "Five"))
    await collect(stream_completion(agent, chat("Five", stream=True), caller_for(gateway, "Five")))
    for request in gateway.requests:
        assert request.body["model"] == sent_model
        assert "reasoning_effort" not in request.body
        assert "verbosity" not in request.body
    assert gateway.requests[1].body["stream_options"] == {"include_usage": True}


async def test_explicit_model_settings_are_kept(tmp_path: Path, gateway: FakeGateway, make_registry: Any) -> None:
    write_agent(
        tmp_path,
        "Tuned",
        "from agents import Agent, ModelSettings\n"
        'agent = Agent(name="t", model="gpt-5", model_settings=ModelSettings(verbosity="high", temperature=0.2))\n',
    )
    registry = await make_registry(tmp_path)
    gateway.reply(Text("ok"))
    await run_completion(registry.get("Tuned"), chat("Tuned"), caller_for(gateway, "Tuned"))
    assert gateway.requests[0].body["verbosity"] == "high"
    assert gateway.requests[0].body["temperature"] == 0.2


async def test_celgate_model_overrides_the_agents_model(
    tmp_path: Path, gateway: FakeGateway, make_registry: Any
) -> None:
    write_agent(
        tmp_path,
        "Pinned",
        'from agents import Agent\n__celgate__ = {"model": "local-llm"}\nagent = Agent(name="p", model="gpt-4.1")\n',
    )
    registry = await make_registry(tmp_path)
    gateway.reply(Text("ok"))
    await run_completion(registry.get("Pinned"), chat("Pinned"), caller_for(gateway, "Pinned"))
    assert gateway.requests[0].body["model"] == "local-llm"
    assert registry.agents()[0]["model"] == "local-llm"


async def test_stream_deltas_arrive_before_the_model_finishes(tools: AgentRegistry, gateway: FakeGateway) -> None:
    hold = asyncio.Event()
    gateway.reply(Text("Hello there world", hold_after_first=hold))
    stream = stream_completion(tools.get("Tools"), chat("Tools", stream=True), caller_for(gateway, "Tools"))
    first = await anext(stream)
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    second = await anext(stream)
    assert second["choices"][0]["delta"] == {"content": "Hello "}
    assert not hold.is_set()  # the gateway is still holding the rest of its reply
    hold.set()
    rest = await collect(stream)
    assert content([second, *rest]) == "Hello there world "
    assert rest[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["id"] == first["id"] and c["object"] == "chat.completion.chunk" for c in rest)


async def test_usage_chunk_only_when_requested(tools: AgentRegistry, gateway: FakeGateway) -> None:
    gateway.reply(Text("a"), Text("b"))
    agent, caller = tools.get("Tools"), caller_for(gateway, "Tools")
    plain = await collect(stream_completion(agent, chat("Tools", stream=True), caller))
    with_usage = await collect(
        stream_completion(agent, chat("Tools", stream=True, stream_options={"include_usage": True}), caller)
    )
    assert all("usage" not in c for c in plain)
    assert with_usage[-1]["choices"] == []
    assert with_usage[-1]["usage"]["total_tokens"] == 15
    assert with_usage[-2]["choices"][0]["finish_reason"] == "stop"


async def test_denied_tool_never_runs_while_allowed_tool_does(
    tools: AgentRegistry, gateway: FakeGateway, hooks: FakeHooks
) -> None:
    hooks.deny.add("danger")
    gateway.reply(ToolCalls([("c1", "safe", '{"x": 1}'), ("c2", "danger", '{"x": 2}')]), Text("done"))
    agent = tools.get("Tools")
    result = await run_completion(agent, chat("Tools"), caller_for(gateway, "Tools"))
    assert agent.module.RAN == [("safe", 1)]
    assert tool_messages(gateway, 1) == {
        "c1": "safe 1",
        "c2": "celgate: danger denied by policy (no-danger): test",
    }
    assert [(t.name, t.raw_arguments, t.id, t.source) for t in hooks.checked] == [
        ("safe", '{"x": 1}', "c1", "agent"),
        ("danger", '{"x": 2}', "c2", "agent"),
    ]
    assert hooks.finished == [("safe", False)]
    assert result["choices"][0]["message"]["content"] == "done"


async def test_failing_tool_is_reported_and_the_model_gets_the_sdk_error(
    tools: AgentRegistry, gateway: FakeGateway, hooks: FakeHooks
) -> None:
    gateway.reply(ToolCalls([("c1", "broken", "{}")]), Text("sorry"))
    await run_completion(tools.get("Tools"), chat("Tools"), caller_for(gateway, "Tools"))
    assert hooks.finished == [("broken", True)]
    assert tool_messages(gateway, 1) == {"c1": "An error occurred while running the tool. Please try again."}


async def test_tools_of_agents_as_tools_and_handoffs_are_governed(
    tmp_path: Path, gateway: FakeGateway, hooks: FakeHooks, make_registry: Any
) -> None:
    write_agent(
        tmp_path,
        "Graph",
        """
        from agents import Agent, function_tool
        RAN = []

        @function_tool
        def secret() -> str:
            \"\"\"Denied everywhere.\"\"\"
            RAN.append("secret")
            return "s"

        researcher = Agent(name="researcher", tools=[secret])
        billing = Agent(name="billing", tools=[secret])
        agent = Agent(name="triage", tools=[researcher.as_tool("research", "Research.")], handoffs=[billing])
        """,
    )
    registry = await make_registry(tmp_path)
    hooks.deny.add("secret")
    gateway.reply(
        ToolCalls([("c1", "research", '{"input": "q"}')]),
        ToolCalls([("c2", "secret", "{}")]),  # inside the agent-as-tool run
        Text("nothing found"),
        ToolCalls([("h1", "transfer_to_billing", "{}")]),
        ToolCalls([("c3", "secret", "{}")]),  # after the handoff
        Text("done"),
    )
    agent = registry.get("Graph")
    assert agent.tools == ("research", "secret")  # every tool in the graph
    await run_completion(agent, chat("Graph"), caller_for(gateway, "Graph"))
    assert agent.module.RAN == []
    assert [t.name for t in hooks.checked] == ["research", "secret", "secret"]
    assert all(h["x-celgate-agent"] == "Graph" for h in (r.headers for r in gateway.requests))


async def test_invented_tool_name_gets_an_error_result(tools: AgentRegistry, gateway: FakeGateway) -> None:
    gateway.reply(ToolCalls([("c1", "no_such_tool", "{}")]), Text("sorry"))
    result = await run_completion(tools.get("Tools"), chat("Tools"), caller_for(gateway, "Tools"))
    assert "not found" in tool_messages(gateway, 1)["c1"]
    assert result["choices"][0]["message"]["content"] == "sorry"


async def test_max_turns_exceeded_is_a_clear_error(tmp_path: Path, gateway: FakeGateway, make_registry: Any) -> None:
    write_agent(tmp_path, "Loop", TOOLS_AGENT.replace("RAN = []", 'RAN = []\n__celgate__ = {"max_turns": 2}'))
    registry = await make_registry(tmp_path)
    gateway.reply(*[ToolCalls([(f"c{i}", "safe", '{"x": 0}')]) for i in range(3)])
    with pytest.raises(AgentRunError) as raised:
        await run_completion(registry.get("Loop"), chat("Loop"), caller_for(gateway, "Loop"))
    assert (raised.value.status, raised.value.type, raised.value.code) == (500, "agent_error", "max_turns_exceeded")
    assert "max_turns=2" in raised.value.message


async def test_gateway_denial_keeps_its_status_and_message(tools: AgentRegistry, gateway: FakeGateway) -> None:
    denial = "celgate: model test-model denied by policy (no-model): nope"
    gateway.reply(Error(403, denial), Error(403, denial))
    agent, caller = tools.get("Tools"), caller_for(gateway, "Tools")
    with pytest.raises(AgentRunError) as raised:
        await run_completion(agent, chat("Tools"), caller)
    assert (raised.value.status, raised.value.type, raised.value.code) == (403, "permission_error", "policy_denied")
    assert raised.value.message == denial
    stream = stream_completion(agent, chat("Tools", stream=True), caller)
    with pytest.raises(AgentRunError) as raised:  # before any chunk: the proxy can still send a 403
        await anext(stream)
    assert raised.value.status == 403


@pytest.mark.parametrize(("status", "expected"), [(403, 403), (504, 504), (None, 502)])
async def test_an_in_band_gateway_error_keeps_the_status_it_carries(
    tools: AgentRegistry, gateway: FakeGateway, status: int | None, expected: int
) -> None:
    """celgate puts the status into its in-band error events; one without (relayed from an upstream) is a 502."""
    gateway.reply(InBandError(status, "celgate: danger_tool denied by policy"))
    stream = stream_completion(tools.get("Tools"), chat("Tools", stream=True), caller_for(gateway, "Tools"))
    with pytest.raises(AgentRunError) as raised:
        await anext(stream)
    assert (raised.value.status, raised.value.type, raised.value.code) == (expected, "policy_denied", "policy_denied")
    assert raised.value.message == "celgate: danger_tool denied by policy"


async def test_agent_without_any_model_is_listed_but_fails_clearly(
    tmp_path: Path, gateway: FakeGateway, make_registry: Any
) -> None:
    write_agent(tmp_path, "NoModel", 'from agents import Agent\nagent = Agent(name="n")\n')
    registry = await make_registry(tmp_path, default_model=None)
    assert registry.names() == ["NoModel"]
    with pytest.raises(AgentRunError) as raised:
        await run_completion(registry.get("NoModel"), chat("NoModel"), caller_for(gateway, "NoModel"))
    assert (raised.value.status, raised.value.code) == (500, "agent_no_model")
    assert "--agents-model" in raised.value.message
    assert gateway.requests == []


async def test_malformed_messages_are_a_400(tools: AgentRegistry, gateway: FakeGateway) -> None:
    with pytest.raises(AgentRunError) as raised:
        await run_completion(tools.get("Tools"), chat("Tools", [{"role": "tool"}]), caller_for(gateway, "Tools"))
    assert (raised.value.status, raised.value.type) == (400, "invalid_request_error")


async def test_closing_the_stream_cancels_the_run(tools: AgentRegistry, gateway: FakeGateway) -> None:
    gateway.reply(ToolCalls([("c1", "slow", "{}")]), Text("never"))
    agent = tools.get("Tools")
    stream = stream_completion(agent, chat("Tools", stream=True), caller_for(gateway, "Tools"))
    async for chunk in stream:
        if chunk.get("celgate", {}).get("type") == "tool_call":
            break
    await stream.aclose()
    await asyncio.sleep(0.5)
    assert agent.module.RAN == []
    assert len(gateway.requests) == 1


async def test_cancelling_the_consumer_task_cancels_the_run(tools: AgentRegistry, gateway: FakeGateway) -> None:
    gateway.reply(ToolCalls([("c1", "slow", "{}")]), Text("never"))
    agent = tools.get("Tools")
    tool_started = asyncio.Event()

    async def consume() -> None:
        async for chunk in stream_completion(agent, chat("Tools", stream=True), caller_for(gateway, "Tools")):
            if chunk.get("celgate", {}).get("type") == "tool_call":
                tool_started.set()

    task = asyncio.create_task(consume())
    await tool_started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.5)
    assert agent.module.RAN == []


async def test_tool_events_parse_with_the_openai_client(
    tools: AgentRegistry, gateway: FakeGateway, aiohttp_server: Any
) -> None:
    async def chat_completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        async for chunk in stream_completion(tools.get(body["model"]), body, caller_for(gateway, body["model"])):
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat_completions)
    server = await aiohttp_server(app)
    gateway.reply(ToolCalls([("c1", "safe", '{"x": 7}')]), Text("Seven."))
    async with openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="k") as client:
        stream = await client.chat.completions.create(
            model="Tools",
            messages=[{"role": "user", "content": "go"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        received = [chunk async for chunk in stream]
    extras = [c.model_extra["celgate"] for c in received if c.model_extra and "celgate" in c.model_extra]
    assert extras == [
        {"type": "tool_call", "id": "c1", "name": "safe", "arguments": '{"x": 7}', "agent": "Tools"},
        {"type": "tool_result", "id": "c1", "name": "safe", "output": "safe 7", "agent": "Tools"},
    ]
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == "Seven. "
    assert received[-1].usage is not None and received[-1].usage.total_tokens == 30


async def test_workflow_streams_its_runs_and_returns_its_output(
    tmp_path: Path, gateway: FakeGateway, hooks: FakeHooks, make_registry: Any
) -> None:
    write_agent(tmp_path, "Flow", WORKFLOW)
    registry = await make_registry(tmp_path)
    agent = registry.get("Flow")
    assert (agent.kind, agent.tools) == ("run_workflow", ("get_invoice",))

    def script() -> None:
        gateway.reply(
            Text('{"department": "billing"}', pieces=['{"department": ', '"billing"}']),
            ToolCalls([("h1", "transfer_to_billing", "{}")]),
            ToolCalls([("c1", "get_invoice", '{"invoice_id": "INV-1"}')]),
            Text("INV-1 is paid."),
        )

    history = [
        {"role": "user", "content": "old question"},
        {"role": "assistant", "content": "old answer"},
        {"role": "user", "content": "Is INV-1 paid?"},
    ]
    script()
    chunks = await collect(
        stream_completion(
            agent,
            chat("Flow", history, stream=True, stream_options={"include_usage": True}),
            caller_for(gateway, "Flow"),
        )
    )
    assert content(chunks) == "INV-1 is paid. "  # the classifier's JSON is data, not streamed
    assert [e["type"] for e in events(chunks)] == ["handoff", "tool_call", "tool_result"]
    assert events(chunks)[0] == {"type": "handoff", "from": "Triage", "to": "Billing"}
    assert chunks[-1]["usage"]["total_tokens"] == 60  # four model calls over two runs
    assert [m["content"] for m in gateway.requests[0].body["messages"] if m["role"] == "user"] == ["Is INV-1 paid?"]
    assert all(r.body.get("stream") for r in gateway.requests)
    assert [t.name for t in hooks.checked] == ["get_invoice"]

    script()
    result = await run_completion(agent, chat("Flow", history), caller_for(gateway, "Flow"))
    assert result["choices"][0]["message"]["content"] == "billing: INV-1 is paid."
    assert all(r.headers["x-celgate-agent"] == "Flow" for r in gateway.requests)


async def test_workflow_output_is_sent_when_nothing_was_streamed(
    tmp_path: Path, gateway: FakeGateway, make_registry: Any
) -> None:
    write_agent(
        tmp_path,
        "Fixed",
        STRUCTURED_WORKFLOW,
    )
    registry = await make_registry(tmp_path)
    chunks = await collect(
        stream_completion(registry.get("Fixed"), chat("Fixed", stream=True), caller_for(gateway, "Fixed"))
    )
    assert content(chunks) == '{"value":2}'
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_runs_the_workflow_streams_itself_are_routed_too(
    tmp_path: Path, gateway: FakeGateway, make_registry: Any
) -> None:
    write_agent(
        tmp_path,
        "SelfStream",
        """
        from agents import Agent, Runner
        from pydantic import BaseModel

        helper = Agent(name="helper", instructions="Help.")
        main = Agent(name="main", tools=[helper.as_tool("ask_helper", "Ask.")])

        class WorkflowInput(BaseModel):
            input_as_text: str

        async def run_workflow(workflow_input: WorkflowInput):
            result = Runner.run_streamed(main, workflow_input.input_as_text)
            async for _ in result.stream_events():
                pass
            return result.final_output
        """,
    )
    registry = await make_registry(tmp_path, default_model="gpt-5")
    gateway.reply(ToolCalls([("c1", "ask_helper", '{"input": "q"}')]), Text("helped"), Text("all done"))
    result = await run_completion(registry.get("SelfStream"), chat("SelfStream"), caller_for(gateway, "SelfStream"))
    assert result["choices"][0]["message"]["content"] == "all done "  # streamed word by word
    assert [r.headers["x-celgate-agent"] for r in gateway.requests] == ["SelfStream"] * 3
    assert not any("reasoning_effort" in r.body for r in gateway.requests)
