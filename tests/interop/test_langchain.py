"""LangChain's ``ChatOpenAI`` through celgate: chat completions and ``use_responses_api=True``, streamed and not.

LangChain turns replies into ``AIMessage``s with parsed ``tool_calls`` (from
whole messages, or from the ``tool_call_chunks`` of a stream) and leaves the
openai SDK's exceptions as they are. The app runs the calls it gets; a denied
call must never be among them.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, tool
from langchain_openai import ChatOpenAI

from tests.helpers import Celgate
from tests.helpers.fakeupstream import FakeUpstream
from tests.helpers.interop import (
    DELETE,
    DENIED_MODEL,
    MODEL,
    SHELL,
    WEATHER,
    Api,
    arguments,
    cut_stream,
    reply,
    upstream_error,
)

pytestmark = pytest.mark.timeout(60)

PROMPT = "What is the weather in Paris?"
APIS: list[Api] = ["chat", "responses"]


def chat_model(gate: Celgate, api: Api, model: str = MODEL) -> ChatOpenAI:
    return ChatOpenAI(
        model=model, base_url=gate.url, api_key="sk-test", max_retries=0, use_responses_api=api == "responses"
    )


def make_tools(executed: list[str]) -> list[BaseTool]:
    """The app's two tools; each records that it ran, which is what a denied call must never cause."""

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        executed.append(f"weather:{city}")
        return "sunny"

    @tool
    def run_shell(command: str) -> str:
        """Run a shell command."""
        executed.append(f"shell:{command}")
        return "done"

    @tool
    def delete_repo(repo: str) -> str:
        """Delete a repository."""
        executed.append(f"delete:{repo}")
        return "deleted"

    return [get_weather, run_shell, delete_repo]


async def ask(model: ChatOpenAI | Any, stream: bool, prompt: str | list[Any] = PROMPT) -> AIMessage:
    """One turn, as an app does it: ``ainvoke``, or ``astream`` with the chunks added up."""
    if not stream:
        message = await model.ainvoke(prompt)
        assert isinstance(message, AIMessage)
        return message
    total: AIMessageChunk | None = None
    async for chunk in model.astream(prompt):
        total = chunk if total is None else total + chunk
    assert total is not None
    return total


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
async def test_text(gate: Celgate, upstream: FakeUpstream, api: Api, stream: bool) -> None:
    upstream.push(reply(api, stream, text="It is sunny"))
    message = await ask(chat_model(gate, api), stream)
    assert message.text == "It is sunny"
    assert upstream.requests[0].path == ("/v1/chat/completions" if api == "chat" else "/v1/responses")
    assert upstream.requests[0].body.get("stream", False) is stream


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("calls", [(WEATHER,), (SHELL, WEATHER), (SHELL,)], ids=["allowed", "mixed", "denied"])
async def test_only_allowed_tool_calls_reach_the_app(
    gate: Celgate, upstream: FakeUpstream, api: Api, stream: bool, calls: tuple[tuple[str, str, str], ...]
) -> None:
    executed: list[str] = []
    tools = {t.name: t for t in make_tools(executed)}
    upstream.push(reply(api, stream, calls=calls))
    message = await ask(chat_model(gate, api).bind_tools(list(tools.values())), stream)
    for tool_call in message.tool_calls:
        await tools[tool_call["name"]].ainvoke(tool_call["args"])
    if WEATHER in calls:
        assert [(c["id"], c["name"], c["args"]) for c in message.tool_calls] == [
            (WEATHER[0], "get_weather", arguments(WEATHER))
        ]
        assert executed == ["weather:Paris"]
    else:
        assert message.tool_calls == [] and message.invalid_tool_calls == []
        assert executed == []
        assert "run_shell denied by policy" in message.text
    body = upstream.requests[0].body
    offered = [t["function"]["name"] if api == "chat" else t["name"] for t in body["tools"]]
    assert offered == ["get_weather"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
async def test_a_call_that_fails_the_response_raises(
    gate: Celgate, upstream: FakeUpstream, api: Api, stream: bool
) -> None:
    """``action: error``: a 403 before a stream starts, an in-band error event after."""
    upstream.push(reply(api, stream, calls=(DELETE,)))
    with pytest.raises(openai.PermissionDeniedError if not stream else openai.APIError, match="never-delete"):
        await ask(chat_model(gate, api).bind_tools(make_tools([])), stream)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
async def test_a_policy_denial_is_permission_denied(
    gate: Celgate, upstream: FakeUpstream, api: Api, stream: bool
) -> None:
    with pytest.raises(openai.PermissionDeniedError) as raised:
        await ask(chat_model(gate, api, DENIED_MODEL), stream)
    assert raised.value.code == "policy_denied"
    assert "this model is not for this app" in raised.value.message
    assert upstream.requests == []


@pytest.mark.parametrize("api", APIS)
async def test_an_upstream_rate_limit_is_rate_limit_error(gate: Celgate, upstream: FakeUpstream, api: Api) -> None:
    upstream.push(upstream_error(429))
    with pytest.raises(openai.RateLimitError) as raised:
        await ask(chat_model(gate, api), False)
    assert raised.value.code == "rate_limit_exceeded"


@pytest.mark.parametrize("api", APIS)
async def test_a_cut_stream_raises(gate: Celgate, upstream: FakeUpstream, api: Api) -> None:
    upstream.push(cut_stream(api))
    with pytest.raises(openai.APIError, match="cut"):
        await ask(chat_model(gate, api), True)


@pytest.mark.parametrize("stream", [False, True])
async def test_use_previous_response_id_chains_past_a_stripped_call(
    stateful_gate: Celgate, stateful_upstream: FakeUpstream, stream: bool
) -> None:
    """The follow-up sends only the new tool result after ``previous_response_id``; the API wants an output for
    every call of the stored response, so celgate answers the one it stripped."""
    upstream = stateful_upstream
    upstream.push(reply("responses", stream, calls=(SHELL, WEATHER)), reply("responses", stream, text="Sunny"))
    executed: list[str] = []
    tools = {t.name: t for t in make_tools(executed)}
    llm = ChatOpenAI(
        model=MODEL, base_url=stateful_gate.url, api_key="sk-test", max_retries=0, use_previous_response_id=True
    ).bind_tools(list(tools.values()))
    history: list[Any] = [HumanMessage(PROMPT)]
    history.append(await ask(llm, stream, history))
    for tool_call in history[-1].tool_calls:
        history.append(
            ToolMessage(await tools[tool_call["name"]].ainvoke(tool_call["args"]), tool_call_id=tool_call["id"])
        )
    answer = await ask(llm, stream, history)
    assert answer.text == "Sunny" and executed == ["weather:Paris"]
    _, follow_up = (r.body for r in upstream.requests if r.method == "POST")
    assert upstream.store is not None and follow_up["previous_response_id"] in upstream.store.responses
    outputs = {i["call_id"]: i["output"] for i in follow_up["input"]}
    assert outputs[WEATHER[0]] == "sunny" and "run_shell denied by policy" in outputs[SHELL[0]]
