"""pydantic-ai through celgate: ``OpenAIChatModel`` and ``OpenAIResponsesModel``, ``run`` and ``run_stream``.

pydantic-ai executes the tool calls it receives itself, so the proof that a
denied call never reached it is a side effect that never happened. Its HTTP
errors become ``ModelHTTPError`` subclasses chosen by status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelAPIError, ModelAuthenticationError, ModelHTTPError, ModelRateLimitError
from pydantic_ai.models import Model
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider

from tests.helpers import Celgate
from tests.helpers.fakeupstream import FakeUpstream
from tests.helpers.interop import DELETE, DENIED_MODEL, MODEL, SHELL, WEATHER, Api, cut_stream, reply, upstream_error

pytestmark = pytest.mark.timeout(60)

APIS: list[Api] = ["chat", "responses"]


@pytest.fixture
async def client(gate: Celgate) -> AsyncIterator[openai.AsyncOpenAI]:
    """The openai client pydantic-ai runs on, without retries so an error surfaces at once."""
    async with openai.AsyncOpenAI(base_url=gate.url, api_key="sk-test", max_retries=0) as made:
        yield made


def model(client: openai.AsyncOpenAI, api: Api, name: str = MODEL) -> Model:
    provider = OpenAIProvider(openai_client=client)
    return OpenAIChatModel(name, provider=provider) if api == "chat" else OpenAIResponsesModel(name, provider=provider)


def make_agent(llm: Model, executed: list[str]) -> Agent[None, str]:
    """An agent with the app's two tools; each records that it ran."""
    agent = Agent(llm, instructions="Help with the weather.")

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """The weather in a city."""
        executed.append(f"weather:{city}")
        return "sunny"

    @agent.tool_plain
    def run_shell(command: str) -> str:
        """Run a shell command."""
        executed.append(f"shell:{command}")
        return "done"

    @agent.tool_plain
    def delete_repo(repo: str) -> str:
        """Delete a repository."""
        executed.append(f"delete:{repo}")
        return "deleted"

    return agent


async def run(agent: Agent[None, str], stream: bool) -> str:
    """The run's output: ``run``, or ``run_stream`` read as text deltas as they come."""
    if not stream:
        return (await agent.run("What is the weather in Paris?")).output
    async with agent.run_stream("What is the weather in Paris?") as result:
        deltas = [delta async for delta in result.stream_text(delta=True)]
    assert "".join(deltas) == await result.get_output()
    return "".join(deltas)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
async def test_text(client: openai.AsyncOpenAI, upstream: FakeUpstream, api: Api, stream: bool) -> None:
    upstream.push(reply(api, stream, text="It is sunny"))
    executed: list[str] = []
    assert await run(make_agent(model(client, api), executed), stream) == "It is sunny"
    assert executed == []
    assert upstream.requests[0].body.get("stream", False) is stream


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("calls", [(WEATHER,), (SHELL, WEATHER)], ids=["alone", "after-a-denied-one"])
async def test_an_allowed_tool_runs_with_its_arguments(
    client: openai.AsyncOpenAI, upstream: FakeUpstream, api: Api, stream: bool, calls: tuple[tuple[str, str, str], ...]
) -> None:
    upstream.push(reply(api, stream, calls=calls), reply(api, stream, text="It is sunny in Paris"))
    executed: list[str] = []
    assert await run(make_agent(model(client, api), executed), stream) == "It is sunny in Paris"
    assert executed == ["weather:Paris"]
    follow_up = str(upstream.requests[1].body)
    assert WEATHER[0] in follow_up and "sunny" in follow_up  # the tool's result went back under the call's id


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
async def test_a_denied_tool_never_runs(
    client: openai.AsyncOpenAI, upstream: FakeUpstream, api: Api, stream: bool
) -> None:
    upstream.push(reply(api, stream, calls=(SHELL,)), reply(api, stream, text="unreachable"))
    executed: list[str] = []
    output = await run(make_agent(model(client, api), executed), stream)
    assert executed == []
    assert "run_shell denied by policy" in output
    assert len(upstream.requests) == 1
    tools = upstream.requests[0].body["tools"]
    assert [t["function"]["name"] if api == "chat" else t["name"] for t in tools] == ["get_weather"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
async def test_a_call_that_fails_the_response_never_runs(
    client: openai.AsyncOpenAI, upstream: FakeUpstream, api: Api, stream: bool
) -> None:
    """``action: error``: a 403 before a stream starts, an in-band error event after; the run fails either way."""
    upstream.push(reply(api, stream, calls=(DELETE,)), reply(api, stream, text="unreachable"))
    executed: list[str] = []
    with pytest.raises(ModelAuthenticationError if not stream else ModelAPIError, match="never-delete"):
        await run(make_agent(model(client, api), executed), stream)
    assert executed == [] and len(upstream.requests) == 1


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
async def test_a_policy_denial_is_an_authentication_error(
    client: openai.AsyncOpenAI, upstream: FakeUpstream, api: Api, stream: bool
) -> None:
    """pydantic-ai files every 403 under ``ModelAuthenticationError`` ("not allowed to make it")."""
    with pytest.raises(ModelAuthenticationError) as raised:
        await run(make_agent(model(client, api, DENIED_MODEL), []), stream)
    assert isinstance(raised.value, ModelHTTPError) and raised.value.status_code == 403
    assert "this model is not for this app" in str(raised.value.body)
    assert upstream.requests == []


@pytest.mark.parametrize("api", APIS)
async def test_an_upstream_rate_limit_is_a_rate_limit_error(
    client: openai.AsyncOpenAI, upstream: FakeUpstream, api: Api
) -> None:
    upstream.push(upstream_error(429))
    with pytest.raises(ModelRateLimitError):
        await run(make_agent(model(client, api), []), False)


@pytest.mark.parametrize("api", APIS)
async def test_a_cut_stream_raises(client: openai.AsyncOpenAI, upstream: FakeUpstream, api: Api) -> None:
    upstream.push(cut_stream(api))
    with pytest.raises(ModelAPIError, match="cut"):
        await run(make_agent(model(client, api), []), True)


@pytest.mark.parametrize("stream", [False, True])
async def test_previous_response_id_chains_past_a_stripped_call(
    stateful_gate: Celgate, stateful_upstream: FakeUpstream, stream: bool
) -> None:
    """With ``openai_previous_response_id="auto"`` the follow-up answers only the call it saw; the API wants an
    output for every call of the stored response, so celgate answers the one it stripped."""
    upstream = stateful_upstream
    upstream.push(reply("responses", stream, calls=(SHELL, WEATHER)), reply("responses", stream, text="Sunny"))
    executed: list[str] = []
    async with openai.AsyncOpenAI(base_url=stateful_gate.url, api_key="sk-test", max_retries=0) as client:
        llm = OpenAIResponsesModel(
            MODEL, provider=OpenAIProvider(openai_client=client), settings={"openai_previous_response_id": "auto"}
        )
        assert await run(make_agent(llm, executed), stream) == "Sunny"
    assert executed == ["weather:Paris"]
    _, follow_up = (r.body for r in upstream.requests if r.method == "POST")
    assert upstream.store is not None and follow_up["previous_response_id"] in upstream.store.responses
    outputs = {i["call_id"]: i["output"] for i in follow_up["input"]}
    assert outputs[WEATHER[0]] == "sunny" and "run_shell denied by policy" in outputs[SHELL[0]]
