"""openai-agents as a client of celgate, on its default model (the Responses API).

A denied tool's body must never run: the side effect is the proof.
"""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.helpers import ALLOW_REQUESTS, StartCelgate, write_policy
from tests.helpers import responses_wire as rw
from tests.helpers.fakeupstream import FakeUpstream, Script

agents = pytest.importorskip("agents")

POLICY = (
    ALLOW_REQUESTS
    + """\
  - name: weather
    on: tool_call
    tools: ["get_weather"]
    effect: allow
"""
)


def make_agent(executed: list[str]) -> object:
    @agents.function_tool
    def run_shell(command: str) -> str:
        """Run a shell command."""
        executed.append(command)
        return "done"

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        executed.append(f"weather:{city}")
        return "sunny"

    return agents.Agent(name="assistant", instructions="help", tools=[run_shell, get_weather])


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_denied_tool_never_runs_in_the_agents_sdk(
    upstream: FakeUpstream, start_celgate: StartCelgate, tmp_path: Path, streamed: bool
) -> None:
    gate = await start_celgate(upstream=upstream.base_url, no_policy=False, policies=write_policy(tmp_path, POLICY))
    shell = rw.function_call_item("call_1", "run_shell", '{"command":"rm -rf /"}')
    weather = rw.function_call_item("call_2", "get_weather", '{"city":"Paris"}')
    first, then = [shell, weather], [rw.message_item("all done")]
    if streamed:
        upstream.push(Script(steps=rw.responses_steps(first)), Script(steps=rw.responses_steps(then)))
    else:
        upstream.push(Script(json=rw.response_object(first)), Script(json=rw.response_object(then)))
    executed: list[str] = []
    client = openai.AsyncOpenAI(base_url=gate.url, api_key="sk-test", max_retries=0)
    model = agents.OpenAIResponsesModel(model="m", openai_client=client)
    config = agents.RunConfig(model=model, tracing_disabled=True)
    agent = make_agent(executed)
    if streamed:
        run = agents.Runner.run_streamed(agent, "clean up", run_config=config)
        async for _ in run.stream_events():
            pass
        output = run.final_output
    else:
        output = (await agents.Runner.run(agent, "clean up", run_config=config)).final_output
    await client.close()
    assert executed == ["weather:Paris"]
    assert output == "all done"
    sent_tools = [t["name"] for t in upstream.requests[0].body["tools"]]
    assert sent_tools == ["get_weather"]  # no rule could allow run_shell: it never reached the model
