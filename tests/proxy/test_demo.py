"""The built-in demo model (``--upstream demo``) speaks the Responses API as exactly as it speaks chat.

Two halves. The demo alone: its objects and events validate against the
installed ``openai`` package's types, frames are ``event:`` + compact JSON,
``sequence_number`` rises by one from 0, deltas add up to ``.done``, a stored
response reads back as it was created, and follow-ups follow the real API's
rules (an unanswered function call is refused). Then through celgate with the
repository's starter policy, as ``celgate serve --upstream demo`` runs: the
real ``openai`` client, stream and not, the ``responses.stream`` helper, the
``get_weather`` call allowed and the ``shell.exec`` call denied.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.responses import FunctionToolParam, Response, ResponseStreamEvent
from pydantic import TypeAdapter

from celgate.proxy import demo as demo_module
from celgate.proxy.demo import DemoServer, demo_reply, responses_messages
from celgate.proxy.jsontext import compact_json
from tests.helpers import REPO, Celgate, OpenAIFactory, StartCelgate

__all__: list[str] = []


WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "strict": False,
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}
SHELL: FunctionToolParam = {
    "type": "function",
    "name": "shell.exec",
    "strict": False,
    "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
}
EVENTS: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)


@pytest.fixture
async def demo() -> AsyncIterator[DemoServer]:
    server = DemoServer(0)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def gate(start_celgate: StartCelgate) -> Celgate:
    """celgate as ``celgate serve --upstream demo`` runs it from the repository root, with the starter policy."""
    return await start_celgate(upstream="demo", no_policy=False, policies=REPO / "policies", demo_delay_ms=0)


async def post_stream(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """A streamed ``POST /responses`` read as raw frames: each must be ``event: <type>`` + compact JSON data."""
    async with http.post(url + "/responses", json={**body, "stream": True}) as response:
        assert response.status == 200 and response.content_type == "text/event-stream"
        raw = (await response.read()).decode()
    assert raw.endswith("\n\n") and "[DONE]" not in raw
    events = []
    for frame in raw.removesuffix("\n\n").split("\n\n"):
        name_line, data_line = frame.split("\n")
        event = json.loads(data_line.removeprefix("data: "))
        assert name_line == f"event: {event['type']}" and data_line == "data: " + compact_json(event)
        events.append(event)
    return events


def check_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The stream is what the API sends; returns the final response, checked against what streamed before it."""
    for event in events:
        EVENTS.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    final: dict[str, Any] = events[-1]["response"]
    Response.model_validate(final)
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    assert {e["response"]["id"] for e in events if "response" in e} == {final["id"]}
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert done == final["output"] and final["status"] == "completed"
    for index, item in enumerate(done):
        of_item = [e for e in events if e.get("output_index") == index]
        assert of_item[0]["type"] == "response.output_item.added" and of_item[-1]["type"] == "response.output_item.done"
        assert of_item[0]["item"]["status"] == "in_progress" and of_item[0]["item"]["id"] == item["id"]
        deltas = "".join(e["delta"] for e in of_item if e["type"].endswith(".delta"))
        if item["type"] == "message":
            assert deltas == item["content"][0]["text"] and len(of_item) > 6  # streamed word by word
        else:
            assert deltas == item["arguments"] and json.loads(deltas)
    return final


# --- the demo alone ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "tools"),
    [
        ("Hello there", []),
        ("What is the weather in Oslo?", [WEATHER]),
        ("What is the weather in Oslo?", []),
        ("open a shell", [SHELL]),
    ],
)
async def test_responses_and_chat_give_the_same_reply(
    demo: DemoServer, oai: OpenAIFactory, prompt: str, tools: list[FunctionToolParam]
) -> None:
    client = oai(demo.base_url)
    response = await client.responses.create(model="demo", input=prompt, tools=tools)
    chat_tools = [{"type": "function", "function": {"name": t["name"], "parameters": t["parameters"]}} for t in tools]
    expected = demo_reply([{"role": "user", "content": prompt}], chat_tools or None)
    [item] = response.output
    if expected.tool is None:
        assert item.type == "message" and response.output_text == expected.text
    else:
        assert item.type == "function_call" and item.name == expected.tool and item.call_id == expected.call_id
        assert json.loads(item.arguments) == expected.arguments
    chat = await client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": prompt}], tools=chat_tools
    )  # type: ignore[arg-type]
    calls = chat.choices[0].message.tool_calls or []
    assert chat.choices[0].message.content == (expected.text if expected.tool is None else None)
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls if c.type == "function"] == (
        [] if expected.tool is None else [(expected.tool, expected.arguments)]
    )


@pytest.mark.parametrize("prompt", ["Hello there, how are you today?", "weather in Paris?"])
async def test_the_stream_is_the_api_wire_format(demo: DemoServer, http: aiohttp.ClientSession, prompt: str) -> None:
    events = await post_stream(http, demo.base_url, {"model": "demo", "input": prompt, "tools": [WEATHER]})
    final = check_events(events)
    async with http.get(f"{demo.base_url}/responses/{final['id']}") as stored:
        assert stored.status == 200 and await stored.json() == final


async def test_a_response_object_is_the_api_wire_format(demo: DemoServer, http: aiohttp.ClientSession) -> None:
    body = {
        "model": "demo",
        "input": "Hi",
        "instructions": "Be brief.",
        "metadata": {"k": "v"},
        "tools": [WEATHER],
        "temperature": 0.5,
        "store": True,
    }
    async with http.post(demo.base_url + "/responses", json=body) as response:
        raw = await response.read()
    document = json.loads(raw)
    assert raw.decode() == compact_json(document)
    parsed = Response.model_validate(document)
    assert (parsed.model, parsed.instructions, parsed.metadata, parsed.temperature) == (
        "demo",
        "Be brief.",
        {"k": "v"},
        0.5,
    )
    assert document["tools"] == [{"description": None, **WEATHER}] and parsed.usage is not None
    assert parsed.id.startswith("resp_") and parsed.output[0].id.startswith("msg_")  # type: ignore[union-attr]


async def test_follow_ups_obey_the_api_rules(demo: DemoServer, oai: OpenAIFactory) -> None:
    client = oai(demo.base_url)
    with pytest.raises(openai.BadRequestError) as unknown:
        await client.responses.create(model="demo", input="hi", previous_response_id="resp_nope")
    assert unknown.value.code == "previous_response_not_found"
    asked = await client.responses.create(model="demo", input="weather in Rome?", tools=[WEATHER])
    [call] = asked.output
    assert call.type == "function_call"
    with pytest.raises(openai.BadRequestError) as unanswered:
        await client.responses.create(model="demo", input="and?", previous_response_id=asked.id)
    assert unanswered.value.message.endswith(f"No tool output found for function call {call.call_id}.")
    answered = await client.responses.create(
        model="demo",
        previous_response_id=asked.id,
        tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Rome: 24 C"}],
    )
    assert answered.output_text == "Here is what the tool returned: Rome: 24 C"
    assert answered.previous_response_id == asked.id
    again = await client.responses.create(model="demo", input="thanks", previous_response_id=answered.id)
    assert again.output_text == "You said: thanks"  # the conversation carries on from the stored turns


async def test_stored_responses_are_bounded_and_store_false_keeps_none(
    demo: DemoServer, oai: OpenAIFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo_module, "_STORED_MAX", 2)
    client = oai(demo.base_url)
    first, second, third = [await client.responses.create(model="demo", input=f"n{n}") for n in range(3)]
    assert (await client.responses.retrieve(third.id)).model_dump() == third.model_dump()
    assert (await client.responses.retrieve(second.id)).output_text == "You said: n1"
    with pytest.raises(openai.NotFoundError) as gone:
        await client.responses.retrieve(first.id)
    assert gone.value.body == {
        "message": f"Response with id '{first.id}' not found.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    unstored = await client.responses.create(model="demo", input="x", store=False)
    assert (unstored.model_extra or {}).get("store") is False  # echoed, though the openai type does not declare it
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(unstored.id)
    await client.responses.delete(third.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(third.id)


def test_responses_input_reads_as_chat_messages() -> None:
    assert responses_messages("hi") == [{"role": "user", "content": "hi"}]
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "reasoning", "summary": []},
    ]
    messages = responses_messages(items)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert demo_reply(messages).text == "Here is what the tool returned: sunny"


async def test_an_agents_sdk_responses_model_runs_a_tool_on_the_demo(demo: DemoServer, oai: OpenAIFactory) -> None:
    """What a drop-in agent on the Responses API does: call the offered tool, answer from its output."""
    from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool

    def get_weather(location: str) -> str:
        """The weather for a place."""
        return f"{location}: 21.0 C, sunny"

    model = OpenAIResponsesModel(model="demo", openai_client=oai(demo.base_url))
    agent = Agent(name="Weather", instructions="Help.", tools=[function_tool(get_weather)], model=model)
    config = RunConfig(tracing_disabled=True)
    result = await Runner.run(agent, "What is the weather in Paris?", run_config=config)
    assert result.final_output == "Here is what the tool returned: Paris: 21.0 C, sunny"
    streamed = Runner.run_streamed(agent, "What is the weather in Rome?", run_config=config)
    async for _ in streamed.stream_events():
        pass
    assert streamed.final_output == "Here is what the tool returned: Rome: 21.0 C, sunny"


# --- through celgate, with the starter policy --------------------------------------------------------


async def test_text_through_celgate_stream_and_not(gate: Celgate, oai: OpenAIFactory) -> None:
    client = oai(gate.url, api_key="sk-anything")
    response = await client.responses.create(model="demo", input="Hello there")
    assert response.output_text == "You said: Hello there"
    stream = await client.responses.create(model="demo", input="Hello there", stream=True)
    events = [event async for event in stream]
    final = check_events([event.model_dump(mode="json", exclude_unset=True) for event in events])
    assert final["output"][0]["content"][0]["text"] == "You said: Hello there"


@pytest.mark.parametrize("tools", [[WEATHER], []], ids=["offered", "not-offered"])
async def test_the_weather_call_is_allowed(gate: Celgate, oai: OpenAIFactory, tools: list[FunctionToolParam]) -> None:
    client = oai(gate.url, api_key="sk-anything")
    response = await client.responses.create(model="demo", input="What is the weather in Oslo?", tools=tools)
    [call] = response.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments)["location"] == "Oslo"
    stream = await client.responses.create(model="demo", input="weather in Oslo?", tools=tools, stream=True)
    final = check_events([event.model_dump(mode="json", exclude_unset=True) async for event in stream])
    assert [item["name"] for item in final["output"]] == ["get_weather"]
    answered = await client.responses.create(
        model="demo",
        previous_response_id=response.id,
        tools=tools,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Oslo: 3 C"}],
    )
    assert answered.output_text == "Here is what the tool returned: Oslo: 3 C"


@pytest.mark.parametrize("tools", [[SHELL], []], ids=["offered", "not-offered"])
async def test_the_shell_call_is_denied(gate: Celgate, oai: OpenAIFactory, tools: list[FunctionToolParam]) -> None:
    """Offered, the tool is removed before the request goes up; either way no shell call reaches the client."""
    client = oai(gate.url, api_key="sk-anything")
    response = await client.responses.create(model="demo", input="open a shell", tools=tools)
    assert [item.type for item in response.output] == ["message"]
    assert "no-shell" in response.output_text and "denied by policy" in response.output_text
    stream = await client.responses.create(model="demo", input="open a shell", tools=tools, stream=True)
    events = [event.model_dump(mode="json", exclude_unset=True) async for event in stream]
    calls = [e for e in events if "function_call" in e["type"] or ("item" in e and e["item"]["type"] != "message")]
    assert calls == [], "a call event reached the client"
    assert events[-1]["type"] == "response.completed" and "no-shell" in json.dumps(events[-1])
    assert [item["type"] for item in events[-1]["response"]["output"]] == ["message"]
    # The demo stored the call celgate stripped and refuses a follow-up leaving it unanswered:
    # celgate answers it with the deny message, so the conversation goes on.
    follow_up = await client.responses.create(model="demo", input="ok, thanks", previous_response_id=response.id)
    assert follow_up.output_text == "You said: ok, thanks"
    stored = await client.responses.retrieve(response.id)  # read back through celgate: filtered again
    assert [item.type for item in stored.output] == ["message"] and "no-shell" in stored.output_text


async def test_a_stream_whose_only_call_is_denied_keeps_sequence_numbers_rising(
    gate: Celgate, oai: OpenAIFactory
) -> None:
    client = oai(gate.url, api_key="sk-anything")
    stream = await client.responses.create(model="demo", input="open a shell", stream=True)
    numbers = [event.sequence_number async for event in stream]
    assert all(a < b for a, b in itertools.pairwise(numbers)), numbers


async def test_the_stream_helper_through_celgate(gate: Celgate, oai: OpenAIFactory) -> None:
    client = oai(gate.url, api_key="sk-anything")
    async with client.responses.stream(model="demo", input="weather in Paris?", tools=[WEATHER]) as stream:
        arguments = [event.delta async for event in stream if event.type == "response.function_call_arguments.delta"]
        final = await stream.get_final_response()
    [call] = final.output
    assert call.type == "function_call" and "".join(arguments) == call.arguments
    async with client.responses.stream(model="demo", input="open a shell") as stream:
        texts = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert [item.type for item in final.output] == ["message"] and "".join(texts) == final.output_text
    assert "no-shell" in final.output_text


async def test_chat_still_streams_through_celgate(gate: Celgate, oai: OpenAIFactory) -> None:
    client = oai(gate.url, api_key="sk-anything")
    stream = await client.chat.completions.create(
        model="demo", stream=True, messages=[{"role": "user", "content": "Hello there"}]
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: Hello there"
    shell = await client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "open a shell"}])
    assert shell.choices[0].message.tool_calls is None and "no-shell" in (shell.choices[0].message.content or "")
