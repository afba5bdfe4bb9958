"""The policy gate on agent tools: idempotent, first in line, closed outside celgate runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.testing import ScriptedModel, assistant_message, function_call

from agents import RunConfig, Runner
from celgate.adapters import run_completion
from celgate.adapters.exports import prepare_agents
from celgate.adapters.guardrails import OUTSIDE_RUN_MESSAGE, policy_gate

from .conftest import FakeGateway, FakeHooks, Text, ToolCalls, caller_for, write_agent

GUARDED = """
from agents import Agent, ToolGuardrailFunctionOutput, function_tool, tool_input_guardrail

RAN = []
AUTHOR_GUARDRAIL_SAW = []

@tool_input_guardrail
def authors_own(data):
    AUTHOR_GUARDRAIL_SAW.append(data.context.tool_name)
    return ToolGuardrailFunctionOutput.allow()

@function_tool(tool_input_guardrails=[authors_own])
def act(x: int) -> str:
    \"\"\"Do it.\"\"\"
    RAN.append(x)
    return f"did {x}"

agent = Agent(name="g", tools=[act])
"""


async def load(tmp_path: Path, make_registry: Any) -> Any:
    write_agent(tmp_path, "Guarded", GUARDED)
    return (await make_registry(tmp_path)).get("Guarded")


async def test_gate_and_timing_are_attached_once_across_runs(
    tmp_path: Path, make_registry: Any, gateway: FakeGateway, hooks: FakeHooks
) -> None:
    agent = await load(tmp_path, make_registry)
    prepare_agents([agent.entry])  # every run prepares again: still one gate, one timer
    [tool] = agent.entry.tools
    assert tool.tool_input_guardrails[0] is policy_gate
    assert [g.get_name() for g in tool.tool_input_guardrails] == ["celgate_policy", "authors_own"]
    for call_id in ("c1", "c2"):
        gateway.reply(ToolCalls([(call_id, "act", '{"x": 1}')]), Text("ok"))
        await run_completion(agent, {"messages": [{"role": "user", "content": "go"}]}, caller_for(gateway, "Guarded"))
    assert hooks.finished == [("act", False), ("act", False)]
    assert len(hooks.checked) == 2


async def test_a_denial_skips_the_authors_guardrails_and_the_body(
    tmp_path: Path, make_registry: Any, gateway: FakeGateway, hooks: FakeHooks
) -> None:
    agent = await load(tmp_path, make_registry)
    hooks.deny.add("act")
    gateway.reply(ToolCalls([("c1", "act", '{"x": 1}')]), Text("ok"))
    await run_completion(agent, {"messages": [{"role": "user", "content": "go"}]}, caller_for(gateway, "Guarded"))
    assert (agent.module.RAN, agent.module.AUTHOR_GUARDRAIL_SAW) == ([], [])


async def test_governed_tools_are_rejected_outside_a_celgate_run(tmp_path: Path, make_registry: Any) -> None:
    agent = await load(tmp_path, make_registry)
    model = ScriptedModel([[function_call("act", {"x": 1}, call_id="c1")], [assistant_message("done")]])
    result = await Runner.run(agent.entry, "go", run_config=RunConfig(model=model, tracing_disabled=True))
    assert result.final_output == "done"
    assert agent.module.RAN == []
    outputs = [i for i in model.calls[1].input if isinstance(i, dict) and i.get("type") == "function_call_output"]
    assert outputs[0]["output"] == OUTSIDE_RUN_MESSAGE
