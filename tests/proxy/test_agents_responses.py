"""Drop-in agents on the Responses API, and agents whose own model calls use it, end to end.

Real sockets, the real Agents SDK and the real ``openai`` client, as in
``test_agents_e2e``: client -> celgate ``/v1/responses`` -> agent in-process ->
celgate (Chat Completions, or the Responses API with ``agents_api="responses"``)
-> the scripted upstream. The client gets the agent's final answer as message
items: the agent's tool calls ran inside celgate and never reach it as
``function_call`` items.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.helpers import Celgate, OpenAIFactory, StartCelgate, assert_openai_error, write_policy
from tests.helpers import responses_wire as rw
from tests.helpers.dropins import sdk_environment, write_agent  # noqa: F401  (autouse here)
from tests.helpers.fakeupstream import FakeUpstream, Script, completion, text_stream, tool_call_stream
from tests.helpers.observe import sample, scrape

from .conftest import DEMO
from .test_agents_e2e import (
    DENIAL,
    FORBIDDEN_AGENT,
    GATED_POLICY,
    LOOPING_AGENT,
    PLAIN_AGENT,
    THREE_CALLS,
    start_toolbox,
    start_with_agents,
)

WEATHER_ANSWER = "Here is what the tool returned: Paris: 21.0 C, sunny"


async def raw_stream(http: aiohttp.ClientSession, celgate: Celgate, body: dict[str, Any]) -> tuple[int, bytes]:
    async with http.post(celgate.url + "/responses", json={**body, "stream": True}) as response:
        if response.status == 200:
            assert response.headers["Content-Type"].startswith("text/event-stream")
        return response.status, await response.read()


# --- the WeatherAgent example on /v1/responses --------------------------------------------------------


async def test_the_weather_example_answers_a_response(demo: Celgate, oai: OpenAIFactory) -> None:
    reply = await oai(demo.url).responses.create(model="WeatherAgent", input="What is the weather in Paris?")
    assert reply.output_text == WEATHER_ANSWER
    assert [item.type for item in reply.output] == ["message"]
    assert (reply.model, reply.status, reply.object) == ("WeatherAgent", "completed", "response")
    assert reply.usage is not None and reply.usage.total_tokens > 0


async def test_the_weather_example_streams_a_response(demo: Celgate, oai: OpenAIFactory) -> None:
    stream = await oai(demo.url).responses.create(
        model="WeatherAgent", input=[{"role": "user", "content": "What is the weather in Paris?"}], stream=True
    )
    events = [event async for event in stream]
    final = rw.check_stream([event.model_dump(mode="json") for event in events])
    assert {event.type for event in events} <= rw.MESSAGE_EVENT_TYPES
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == WEATHER_ANSWER
    assert events[-1].type == "response.completed" and events[-1].response.output_text == WEATHER_ANSWER
    assert [item["type"] for item in final["output"]] == ["message"]


async def test_the_weather_example_through_the_stream_helper(demo: Celgate, oai: OpenAIFactory) -> None:
    deltas: list[str] = []
    async with oai(demo.url).responses.stream(
        model="WeatherAgent", input="What is the weather in Paris?", instructions="Be brief."
    ) as stream:
        async for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text == WEATHER_ANSWER
    assert final.instructions == "Be brief."


async def test_a_raw_stream_is_named_events_without_done(demo: Celgate, http: aiohttp.ClientSession) -> None:
    status, raw = await raw_stream(http, demo, {"model": "WeatherAgent", "input": "What is the weather in Paris?"})
    assert status == 200
    frames = rw.parse_sse(raw)
    assert all(frame.event == json.loads(frame.data)["type"] for frame in frames)
    assert b"[DONE]" not in raw
    rw.check_stream(raw)  # consecutive sequence numbers, consistent items, the snapshot matches


# --- governed tools inside the agent ------------------------------------------------------------------


@pytest.fixture
async def toolbox(upstream: FakeUpstream, start_celgate: StartCelgate, tmp_path: Path) -> tuple[Celgate, Path]:
    return await start_toolbox(start_celgate, upstream, tmp_path)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_denied_tool_is_still_denied_and_the_client_sees_only_the_answer(
    toolbox: tuple[Celgate, Path],
    upstream: FakeUpstream,
    oai: OpenAIFactory,
    http: aiohttp.ClientSession,
    stream: bool,
) -> None:
    celgate, effects = toolbox
    if stream:
        upstream.push(Script(steps=tool_call_stream(THREE_CALLS[:2])), Script(steps=text_stream(["Done."])))
    else:
        upstream.push(Script(json=completion(None, THREE_CALLS[:2])), Script(json=completion("Done.")))
    client = oai(celgate.url)
    if stream:
        async with client.responses.stream(model="Toolbox", input="Go") as events:
            reply = await events.get_final_response()
    else:
        reply = await client.responses.create(model="Toolbox", input="Go")

    assert reply.output_text == "Done."
    assert [item.type for item in reply.output] == ["message"]  # no function_call for the client to run
    assert effects.read_text().splitlines() == ["safe_tool apple"]  # never danger_tool
    outputs = {m["tool_call_id"]: m["content"] for m in upstream.requests[1].body["messages"] if m["role"] == "tool"}
    assert outputs == {"call_safe": "safe: apple", "call_danger": DENIAL}
    samples = await scrape(http, celgate)
    assert sample(samples, "celgate_tool_calls_total", tool="danger_tool", decision="deny", source="agent") == 1
    assert sample(samples, "celgate_tool_calls_total", tool="safe_tool", decision="allow", source="agent") == 1


# --- errors -------------------------------------------------------------------------------------------


@pytest.fixture
async def gated(upstream: FakeUpstream, start_celgate: StartCelgate, tmp_path: Path) -> Celgate:
    agents = tmp_path / "agents"
    write_agent(agents, "SecretAgent", PLAIN_AGENT.format(name="SecretAgent"))
    write_agent(agents, "Looper", LOOPING_AGENT)
    write_agent(agents, "Forbidden", FORBIDDEN_AGENT)
    return await start_with_agents(
        start_celgate, upstream, agents, no_policy=False, policies=write_policy(tmp_path, GATED_POLICY)
    )


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["SecretAgent", "Forbidden"])
async def test_a_failure_before_any_output_is_an_http_error(
    gated: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, model: str, stream: bool
) -> None:
    """The request itself denied, or the agent's first model call denied: a 403 JSON error, no stream."""
    body = {"model": model, "input": "Hi", "stream": stream}
    async with http.post(gated.url + "/responses", json=body) as response:
        assert response.status == 403 and response.content_type == "application/json"
        assert_openai_error(await response.json(), type_="policy_denied", code="policy_denied")
    assert upstream.requests == []


async def test_a_failure_mid_stream_is_an_error_event_and_no_completion(
    gated: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, oai: OpenAIFactory
) -> None:
    again = [("call_again", "again", "{}")]
    upstream.push(*(Script(steps=tool_call_stream(again)) for _ in range(2)))
    status, raw = await raw_stream(http, gated, {"model": "Looper", "input": "Hi"})
    assert status == 200  # the tool call started the stream, so max_turns arrives in-band
    frames = rw.parse_sse(raw)
    assert [f.event for f in frames] == ["response.created", "response.in_progress", "error"]
    error = assert_openai_error(json.loads(frames[-1].data), type_="agent_error", code="max_turns_exceeded")
    assert error["status"] == 500 and "max_turns=2" in error["message"]

    upstream.push(*(Script(steps=tool_call_stream(again)) for _ in range(2)))
    stream = await oai(gated.url).responses.create(model="Looper", input="Hi", stream=True)
    with pytest.raises(openai.APIError) as raised:
        [event async for event in stream]
    assert raised.value.code == "max_turns_exceeded"


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"previous_response_id": "resp_1"}, "unsupported_parameter"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "invalid_input"),
    ],
)
async def test_input_an_agent_cannot_take_is_a_400(
    upstream: FakeUpstream,
    start_celgate: StartCelgate,
    oai: OpenAIFactory,
    tmp_path: Path,
    extra: dict[str, Any],
    code: str,
) -> None:
    write_agent(tmp_path / "agents", "Plain", PLAIN_AGENT.format(name="Plain"))
    celgate = await start_with_agents(start_celgate, upstream, tmp_path / "agents")
    with pytest.raises(openai.BadRequestError) as raised:
        await oai(celgate.url).responses.create(**{"model": "Plain", "input": "Hi", **extra})
    assert raised.value.code == code
    assert upstream.requests == []


async def test_a_broken_agent_is_a_503_on_responses_too(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    write_agent(tmp_path / "agents", "BrokenAgent", "this is not python\n")
    celgate = await start_with_agents(start_celgate, upstream, tmp_path / "agents")
    async with http.post(celgate.url + "/responses", json={"model": "BrokenAgent", "input": "hi"}) as response:
        assert response.status == 503
        assert_openai_error(await response.json(), type_="agent_error", code="agent_unavailable")
    assert upstream.requests == []


# --- agents_api="responses": the agent's own model calls on /v1/responses -------------------------------


async def test_with_agents_api_responses_the_agents_model_calls_use_the_responses_api(
    upstream: FakeUpstream,
    start_celgate: StartCelgate,
    oai: OpenAIFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    celgate, effects = await start_toolbox(start_celgate, upstream, tmp_path, agents_api="responses")
    calls = [rw.function_call_item(call_id, name, arguments) for call_id, name, arguments in THREE_CALLS[:2]]
    upstream.push(Script(json=rw.response_object(calls)), Script(json=rw.response_object([rw.message_item("Done.")])))
    reply = await oai(celgate.url).chat.completions.create(
        model="Toolbox", messages=[{"role": "user", "content": "Go"}]
    )

    assert reply.choices[0].message.content == "Done."
    assert [r.path for r in upstream.requests] == ["/v1/responses", "/v1/responses"]
    first, second = (r.body for r in upstream.requests)
    assert first["model"] == "fake-model" and first["instructions"] == "Use your tools."
    assert sorted(t["name"] for t in first["tools"]) == ["broken_tool", "danger_tool", "safe_tool"]
    assert "previous_response_id" not in second  # every call carries the whole run so far
    assert second["input"][0] == {"role": "user", "content": "Go"}
    outputs = {i["call_id"]: i["output"] for i in second["input"] if i.get("type") == "function_call_output"}
    assert outputs == {"call_safe": "safe: apple", "call_danger": DENIAL}
    assert effects.read_text().splitlines() == ["safe_tool apple"]
    samples = await scrape(http, celgate)
    # The model's calls passed celgate's Responses tool-call point, then the agent's.
    assert sample(samples, "celgate_tool_calls_total", tool="danger_tool", decision="allow", source="upstream") == 1
    assert sample(samples, "celgate_tool_calls_total", tool="danger_tool", decision="deny", source="agent") == 1


async def test_with_agents_api_responses_a_streamed_response_streams_end_to_end(
    upstream: FakeUpstream, start_celgate: StartCelgate, oai: OpenAIFactory, tmp_path: Path
) -> None:
    write_agent(tmp_path / "agents", "Plain", PLAIN_AGENT.format(name="Plain"))
    celgate = await start_with_agents(start_celgate, upstream, tmp_path / "agents", agents_api="responses")
    async with oai(celgate.url).responses.stream(model="Plain", input="Hi") as stream:
        deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Hello world"  # the fake upstream's default Responses answer
    [call] = upstream.requests
    assert call.path == "/v1/responses" and call.body["stream"] is True
    assert call.body["input"] == [{"role": "user", "content": "Hi"}]
    assert final.model == "Plain"


async def test_the_weather_example_runs_on_the_responses_api_too(
    start_celgate: StartCelgate, oai: OpenAIFactory
) -> None:
    demo = await start_celgate(**DEMO, agents_api="responses")
    client = oai(demo.url)
    reply = await client.responses.create(model="WeatherAgent", input="What is the weather in Paris?")
    assert reply.output_text == WEATHER_ANSWER
    chat = await client.chat.completions.create(
        model="WeatherAgent", messages=[{"role": "user", "content": "What is the weather in Paris?"}]
    )
    assert chat.choices[0].message.content == WEATHER_ANSWER


@pytest.mark.parametrize(
    ("flags", "environ", "yaml", "expected"),
    [
        ({}, {}, "", "chat"),
        ({"agents_api": "responses"}, {"CELGATE_AGENTS_API": "chat"}, "", "responses"),
        ({}, {"CELGATE_AGENTS_API": "Responses"}, "agents_api: chat\n", "responses"),
        ({}, {}, "agents-api: responses\n", "responses"),
    ],
)
def test_the_agents_api_setting_comes_from_flag_env_or_file(
    tmp_path: Path, flags: dict[str, Any], environ: dict[str, str], yaml: str, expected: str
) -> None:
    from celgate.proxy.settings import load_settings

    config = tmp_path / "celgate.yaml"
    config.write_text(yaml)
    assert load_settings(flags, environ, config).agents_api == expected


def test_an_unknown_agents_api_is_refused(tmp_path: Path) -> None:
    from celgate.proxy.settings import SettingsError, load_settings

    config = tmp_path / "celgate.yaml"
    config.write_text("")
    with pytest.raises(SettingsError, match="agents_api from environment: expected one of chat, responses"):
        load_settings({}, {"CELGATE_AGENTS_API": "grpc"}, config)
