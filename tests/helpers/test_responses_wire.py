"""The Responses wire builders against the openai package itself: its pydantic types and its real clients.

If these pass, what ``responses_wire`` builds (and what ``FakeUpstream`` serves
for ``/v1/responses``) is something the official SDK parses, streams and
accumulates to the same response: the ground truth celgate's tests stand on.
"""

from __future__ import annotations

import asyncio
import json
import re
import typing
from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.responses import (
    Response,
    ResponseApplyPatchToolCall,
    ResponseComputerToolCall,
    ResponseCustomToolCall,
    ResponseFunctionShellToolCall,
    ResponseFunctionToolCall,
    ResponseFunctionWebSearch,
    ResponseInputItemParam,
    ResponseItem,
    ResponseOutputItem,
    ResponseOutputMessage,
    ResponseReasoningItem,
    ResponseStreamEvent,
)
from openai.types.responses.response_output_item import LocalShellCall, McpCall
from pydantic import BaseModel, TypeAdapter

from tests.helpers import responses_wire as rw
from tests.helpers.fakeupstream import FakeUpstream, ResponsesStore, Script, Step

__all__: list[str] = []

OUTPUT_ITEM: TypeAdapter[Any] = TypeAdapter(ResponseOutputItem)
STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
INPUT_ITEM: TypeAdapter[Any] = TypeAdapter(ResponseInputItemParam)
STORED_ITEM: TypeAdapter[Any] = TypeAdapter(ResponseItem)

# Each stream event type -> its own openai class, so every event is checked against exactly its type.
EVENT_CLASSES: dict[str, type[BaseModel]] = {
    typing.get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in typing.get_args(typing.get_args(ResponseStreamEvent)[0])
}

BUILDERS: list[tuple[Callable[[], rw.Item], type[BaseModel]]] = [
    (lambda: rw.message_item("Hello there"), ResponseOutputMessage),
    (lambda: rw.message_item(["one", "two"], phase="final_answer"), ResponseOutputMessage),
    (lambda: rw.message_item([rw.refusal_part("I can't help with that.")]), ResponseOutputMessage),
    (lambda: rw.function_call_item("call_1", "get_weather", '{"city":"Paris"}'), ResponseFunctionToolCall),
    (lambda: rw.custom_tool_call_item("call_2", "code_exec", "print(1)"), ResponseCustomToolCall),
    (lambda: rw.local_shell_call_item("call_3", ["ls", "-la"], env={"A": "1"}, timeout_ms=1000), LocalShellCall),
    (
        lambda: rw.shell_call_item("call_4", ["ls -la", "pwd"], timeout_ms=120000, max_output_length=4096),
        ResponseFunctionShellToolCall,
    ),
    (lambda: rw.apply_patch_call_item("call_5", "src/a.py", "@@\n-a\n+b\n"), ResponseApplyPatchToolCall),
    (lambda: rw.apply_patch_call_item("call_6", "src/b.py", operation="delete_file"), ResponseApplyPatchToolCall),
    (
        lambda: rw.apply_patch_call_item("call_7", "src/c.py", "+new\n", operation="create_file"),
        ResponseApplyPatchToolCall,
    ),
    (lambda: rw.computer_call_item("call_8"), ResponseComputerToolCall),
    (lambda: rw.computer_call_item("call_9", {"type": "screenshot"}), ResponseComputerToolCall),
    (
        lambda: rw.reasoning_item(["Thinking about it.", "Done thinking."], encrypted_content="gAAA"),
        ResponseReasoningItem,
    ),
    (lambda: rw.reasoning_item(), ResponseReasoningItem),
    (lambda: rw.web_search_call_item("celgate proxy"), ResponseFunctionWebSearch),
    (lambda: rw.mcp_call_item(), McpCall),
    (lambda: rw.mcp_call_item(error="server unreachable"), McpCall),
]

ALL_ITEMS: Callable[[], list[rw.Item]] = lambda: [build() for build, _ in BUILDERS]


def strip_helper_fields(value: Any) -> Any:
    """A stream helper's dump without the fields it adds itself (``parsed``, ``parsed_arguments``)."""
    if isinstance(value, dict):
        return {k: strip_helper_fields(v) for k, v in value.items() if k not in ("parsed", "parsed_arguments")}
    if isinstance(value, list):
        return [strip_helper_fields(v) for v in value]
    return value


def sent(*items: rw.Item) -> Any:
    """Input items as a request's ``input`` (the client's param types are TypedDicts; these are plain dicts)."""
    return list(items)


def error_body(error: openai.APIStatusError) -> dict[str, Any]:
    """The ``error`` object of an API error, as the client parsed it."""
    assert isinstance(error.body, dict)
    return error.body


def dump(model: BaseModel) -> Any:
    """What a model was parsed from: set fields only, as JSON."""
    return strip_helper_fields(model.model_dump(mode="json", exclude_unset=True))


@pytest.fixture
async def client(upstream: FakeUpstream) -> AsyncIterator[AsyncOpenAI]:
    api = AsyncOpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0)
    yield api
    await api.close()


# --- builders against the types ------------------------------------------------------------------


@pytest.mark.parametrize("build, cls", BUILDERS, ids=lambda v: getattr(v, "__name__", ""))
def test_every_item_builder_is_its_openai_type_exactly(build: Callable[[], rw.Item], cls: type[BaseModel]) -> None:
    item = build()
    parsed = cls.model_validate(item)
    assert dump(parsed) == item  # nothing coerced, nothing dropped
    assert type(OUTPUT_ITEM.validate_python(item)) is cls  # the union resolves it to the same type
    assert STORED_ITEM.validate_python(item).type == item["type"]  # and GET /input_items may list it as it is


def test_ids_look_like_the_apis_and_are_unique() -> None:
    ids = {rw.new_id("resp") for _ in range(100)}
    assert len(ids) == 100 and all(re.fullmatch(r"resp_[0-9a-f]{50}", i) for i in ids)
    assert re.fullmatch(r"call_[A-Za-z0-9]{24}", rw.new_call_id())
    assert rw.function_call_item()["id"].startswith("fc_") and rw.message_item()["id"].startswith("msg_")


@pytest.mark.parametrize("status", ["completed", "incomplete", "failed", "in_progress", "queued", "cancelled"])
def test_response_object_is_a_response_with_every_required_field(status: rw.ResponseStatus) -> None:
    body = rw.response_object(ALL_ITEMS(), status=status, previous_response_id="resp_prev", instructions="Be brief.")
    response = Response.model_validate(body)
    required = {name for name, f in Response.model_fields.items() if f.is_required()}
    assert required <= set(body)
    assert dump(response) == json.loads(json.dumps(body))
    assert response.status == status and response.previous_response_id == "resp_prev"
    assert (body["usage"] is None) == (status not in ("completed", "incomplete"))
    assert (body["incomplete_details"] is not None) == (status == "incomplete")
    assert (body["error"] is not None) == (status == "failed")
    assert (body["completed_at"] is not None) == (status == "completed")


def test_response_object_echoes_a_request_as_the_api_does() -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    request = {
        "model": "gpt-4.1",
        "input": "hi",
        "tools": [tool],
        "tool_choice": "required",
        "store": False,
        "metadata": {"k": "v"},
    }
    body = rw.response_object([rw.message_item()], **rw.request_fields(request))
    response = Response.model_validate(body)
    assert response.model == "gpt-4.1" and response.tool_choice == "required" and body["store"] is False
    assert body["tools"] == [{**tool, "description": None, "strict": True}]
    assert response.metadata == {"k": "v"}


def test_tool_outputs_are_the_input_items_clients_send() -> None:
    calls = [i for i in ALL_ITEMS() if i["type"] in rw.CALL_OUTPUT_TYPES]
    assert {c["type"] for c in calls} == set(rw.CALL_OUTPUT_TYPES)
    for call in calls:
        output = rw.tool_output(call, "done")
        assert output["type"] == rw.CALL_OUTPUT_TYPES[call["type"]]
        INPUT_ITEM.validate_python(output)
        stored = rw.input_items({"input": [output]})[0]
        assert STORED_ITEM.validate_python(stored).type == output["type"]
    with pytest.raises(ValueError):
        rw.tool_output(rw.web_search_call_item())


def test_input_items_are_listed_with_ids_as_the_api_lists_them() -> None:
    call = rw.function_call_item("call_a")
    items = rw.input_items(
        {
            "input": [
                {"role": "user", "content": "hi"},
                {"type": "item_reference", "id": call["id"]},
                rw.tool_output(call),
            ]
        },
        {call["id"]: call},
    )
    assert [i["type"] for i in items] == ["message", "function_call", "function_call_output"]
    assert items[0]["content"] == [{"type": "input_text", "text": "hi"}] and items[0]["id"].startswith("msg_")
    assert items[1] == call
    for item in items:
        STORED_ITEM.validate_python(item)
    assert rw.input_items({"input": "hello"})[0]["content"] == [{"type": "input_text", "text": "hello"}]


# --- the stream against the types ----------------------------------------------------------------


def test_every_event_of_a_stream_is_its_openai_type() -> None:
    events = rw.response_events(ALL_ITEMS(), shell_command_events=True)
    seen = set()
    for event in events:
        cls = EVENT_CLASSES[event["type"]]
        parsed = cls.model_validate(event)
        assert dump(parsed) == event
        assert type(STREAM_EVENT.validate_python(event)) is cls
        seen.add(event["type"])
    every_type = rw.MESSAGE_EVENT_TYPES | {
        "response.refusal.delta",
        "response.refusal.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        "response.web_search_call.completed",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
        "response.shell_call_command.added",
        "response.shell_call_command.delta",
        "response.shell_call_command.done",
    }
    assert every_type <= seen
    assert rw.check_stream(events) == events[-1]["response"]


def test_the_stream_is_numbered_and_indexed_consistently() -> None:
    items = [
        rw.message_item(["Hello big", "world"]),
        rw.function_call_item("call_1", "f", '{"a":1,"b":2}'),
        rw.custom_tool_call_item("call_2"),
    ]
    events = rw.response_events(items, split_arguments=3, text_deltas=2)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[0]["response"]["output"] == [] and events[0]["response"]["usage"] is None
    assert events[0]["response"]["status"] == "in_progress" and events[-1]["type"] == "response.completed"
    message_id, call_id, custom_id = (i["id"] for i in items)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_type.setdefault(event["type"], []).append(event)
    assert [
        (e["output_index"], e["item"]["id"], e["item"]["status"]) for e in by_type["response.output_item.added"]
    ] == [
        (0, message_id, "in_progress"),
        (1, call_id, "in_progress"),
        (2, custom_id, "in_progress"),
    ]
    assert by_type["response.output_item.added"][1]["item"]["arguments"] == ""
    text = by_type["response.output_text.delta"]
    assert [(e["item_id"], e["output_index"], e["content_index"]) for e in text] == [(message_id, 0, 0)] * 2 + [
        (message_id, 0, 1)
    ] * 2
    assert "".join(e["delta"] for e in text) == "Hello bigworld" and all(
        e["logprobs"] == [] and "obfuscation" in e for e in text
    )
    arguments = by_type["response.function_call_arguments.delta"]
    assert len(arguments) == 3 and "".join(e["delta"] for e in arguments) == '{"a":1,"b":2}'
    assert {(e["item_id"], e["output_index"]) for e in arguments} == {(call_id, 1)}
    assert by_type["response.function_call_arguments.done"][0]["arguments"] == '{"a":1,"b":2}'
    assert len(by_type["response.custom_tool_call_input.delta"]) == 3
    assert events[-1]["response"]["output"] == items
    # an item's events sit between its added and done, in order
    spans = [(e["output_index"], e["sequence_number"]) for e in events if "output_index" in e]
    assert [index for index, _ in spans] == sorted(index for index, _ in spans)


def test_text_streams_in_word_tokens_by_default() -> None:
    events = rw.response_events([rw.message_item("Hello there, world!")])
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["Hello", " there,", " world!"]


@pytest.mark.parametrize("status, terminal", [("incomplete", "response.incomplete"), ("failed", "response.failed")])
def test_unfinished_streams_end_as_the_api_ends_them(status: rw.ResponseStatus, terminal: str) -> None:
    events = rw.response_events([rw.message_item("cut", status="incomplete")], status=status)
    assert events[-1]["type"] == terminal and events[-1]["response"]["status"] == status
    rw.check_stream(events)
    with pytest.raises(ValueError):
        rw.response_events([], status="in_progress")


def test_frames_are_exactly_the_apis_sse() -> None:
    frames = rw.response_stream([rw.message_item("Hi"), rw.function_call_item()])
    for data in frames:
        match = re.fullmatch(rb"event: ([a-z_.]+)\ndata: (\{.*\})\n\n", data, re.DOTALL)
        assert match, data
        event = json.loads(match[2])
        assert event["type"] == match[1].decode() and list(event)[:2] == ["type", "sequence_number"]
        assert json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode() == match[2]  # compact, as sent
    assert b"[DONE]" not in b"".join(frames)  # the Responses API ends with the terminal event, no [DONE]
    assert rw.stream_events(b"".join(frames)) == [json.loads(f.split(b"data: ", 1)[1]) for f in frames]


def test_check_stream_catches_broken_streams() -> None:
    events = rw.response_events([rw.message_item("Hello world"), rw.function_call_item()])
    broken = [dict(e) for e in events]
    del broken[3]
    with pytest.raises(AssertionError):
        rw.check_stream(broken)
    rw.check_stream([e for e in events if e["type"] != "response.in_progress"], consecutive=False)
    wrong_delta = [dict(e, delta="X") if e["type"] == "response.function_call_arguments.delta" else e for e in events]
    with pytest.raises(AssertionError):
        rw.check_stream(wrong_delta)
    assert rw.parse_sse(b"event: a\r\ndata: {}\r\n\r\n: comment\n\ndata: 1\ndata: 2\n\n") == [
        rw.SSEFrame("a", "{}"),
        rw.SSEFrame(None, "1\n2"),
    ]


def test_steps_play_the_frames_with_delays() -> None:
    frames = rw.response_stream([rw.message_item("Hi")], id="resp_x", created_at=1)
    steps = rw.responses_steps(
        [rw.message_item("Hi", id=rw.stream_events(b"".join(frames))[2]["item"]["id"])],
        id="resp_x",
        created_at=1,
        delay=0.01,
        first_delay=0.5,
    )
    assert [s.delay for s in steps] == [0.5] + [0.01] * (len(steps) - 1)
    assert b"".join(s.data for s in steps) == b"".join(frames)
    chunked = rw.responses_steps([rw.message_item("Hi")], split_bytes=7)
    assert max(len(s.data) for s in chunked) == 7 and all(isinstance(s, Step) for s in chunked)


# --- the real openai client against FakeUpstream --------------------------------------------------


def scenario() -> tuple[list[rw.Item], dict[str, Any]]:
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": None,
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    }
    items = [
        rw.reasoning_item(["Looking up the weather."]),
        rw.message_item("Let me check the weather."),
        rw.function_call_item("call_w1", "get_weather", '{"city":"Paris"}'),
        rw.custom_tool_call_item("call_c1", "code_exec", "print('hi')"),
        rw.web_search_call_item(),
    ]
    return items, {"id": rw.new_id("resp"), "created_at": 1741476542, "tools": [tool], "model": "gpt-4.1-2025-04-14"}


async def test_the_stream_helper_accumulates_exactly_the_snapshot(upstream: FakeUpstream, client: AsyncOpenAI) -> None:
    items, kwargs = scenario()
    snapshot = rw.response_object(items, **kwargs)
    upstream.push(Script(steps=rw.responses_steps(items, **kwargs)))
    text_snapshots: list[str] = []
    async with client.responses.stream(
        model="gpt-4.1",
        input="Weather in Paris?",
        tools=[
            {"type": "function", "name": "get_weather", "parameters": kwargs["tools"][0]["parameters"], "strict": True}
        ],
    ) as stream:
        types = []
        async for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                text_snapshots.append(event.snapshot)
        final = await stream.get_final_response()
    assert dump(final) == snapshot
    assert final.output_text == "Let me check the weather."
    assert text_snapshots == ["Let", "Let me", "Let me check", "Let me check the", "Let me check the weather."]
    call = final.output[2]
    assert isinstance(call, ResponseFunctionToolCall) and getattr(call, "parsed_arguments", None) == {"city": "Paris"}
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert upstream.requests[0].path == "/v1/responses" and upstream.requests[0].body["stream"] is True


async def test_create_stream_yields_every_event_as_sent(upstream: FakeUpstream, client: AsyncOpenAI) -> None:
    items, kwargs = scenario()
    events = rw.response_events(items, **kwargs)
    upstream.push(Script(steps=[Step(rw.frame(e)) for e in events]))
    received = [dump(e) async for e in await client.responses.create(model="gpt-4.1", input="hi", stream=True)]
    assert received == events
    assert received[-1]["response"] == rw.response_object(items, **kwargs)


async def test_the_sync_stream_helper_accumulates_the_snapshot_too(upstream: FakeUpstream) -> None:
    """The sync client has its own stream classes: run it in a thread while the fake serves on this loop."""
    items, kwargs = scenario()
    upstream.push(Script(steps=rw.responses_steps(items, split_bytes=5, **kwargs)))

    def run() -> Any:
        with (
            OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0) as api,
            api.responses.stream(model="gpt-4.1", input="hi") as stream,
        ):
            for _ in stream:
                pass
            return dump(stream.get_final_response())

    assert await asyncio.to_thread(run) == rw.response_object(items, **kwargs)


async def test_incomplete_stream_reaches_the_client_as_incomplete(upstream: FakeUpstream, client: AsyncOpenAI) -> None:
    items = [rw.message_item("Partial answ", status="incomplete")]
    upstream.push(Script(steps=rw.responses_steps(items, status="incomplete")))
    async with client.responses.stream(model="m", input="hi") as stream:
        events = [e async for e in stream]
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete" and last.response.incomplete_details is not None
    assert dump(last.response)["output"] == items


async def test_non_stream_create_parses_to_the_object(upstream: FakeUpstream, client: AsyncOpenAI) -> None:
    items, kwargs = scenario()
    body = rw.response_object(items, **kwargs)
    upstream.push(Script(json=body))
    response = await client.responses.create(model="gpt-4.1", input="hi")
    assert dump(response) == body and response.output_text == "Let me check the weather."


async def test_retrieve_and_input_items_parse(upstream: FakeUpstream, client: AsyncOpenAI) -> None:
    items, kwargs = scenario()
    body = rw.response_object(items, **kwargs)
    listed = rw.input_items({"input": "Weather in Paris?"})
    upstream.push(
        Script(json=body),
        Script(
            json={
                "object": "list",
                "data": listed,
                "first_id": listed[0]["id"],
                "last_id": listed[0]["id"],
                "has_more": False,
            }
        ),
    )
    retrieved = await client.responses.retrieve(kwargs["id"])
    assert dump(retrieved) == body
    page = await client.responses.input_items.list(kwargs["id"])
    assert [dump(i) for i in page.data] == listed
    assert [r.path for r in upstream.requests] == [
        f"/v1/responses/{kwargs['id']}",
        f"/v1/responses/{kwargs['id']}/input_items",
    ]


# --- FakeUpstream's Responses defaults and store -------------------------------------------------


async def test_default_answer_echoes_the_request_streamed_or_not(upstream: FakeUpstream, client: AsyncOpenAI) -> None:
    response = await client.responses.create(model="gpt-x", input="hi", instructions="Be brief.", metadata={"a": "b"})
    assert response.output_text == "Hello world" and response.model == "gpt-x" and response.instructions == "Be brief."
    assert response.metadata == {"a": "b"} and response.status == "completed"
    async with client.responses.stream(model="gpt-y", input="hi") as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_response()
    assert final.output_text == "Hello world" and final.model == "gpt-y"
    chat = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content == "Hello world"  # the chat default is untouched


async def test_the_raw_default_stream_is_well_formed(upstream: FakeUpstream) -> None:
    import aiohttp

    async with (
        aiohttp.ClientSession() as http,
        http.post(upstream.base_url + "/responses", json={"model": "m", "input": "hi", "stream": True}) as answer,
    ):
        assert answer.headers["Content-Type"] == "text/event-stream"
        final = rw.check_stream(await answer.read())
    assert final["output"][0]["content"][0]["text"] == "Hello world"


@pytest.fixture
async def stored() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream(store=True, enforce_tool_outputs=True)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def stored_client(stored: FakeUpstream) -> AsyncIterator[AsyncOpenAI]:
    api = AsyncOpenAI(base_url=stored.base_url, api_key="sk-test", max_retries=0)
    yield api
    await api.close()


async def test_the_store_serves_what_the_fake_returned(stored: FakeUpstream, stored_client: AsyncOpenAI) -> None:
    created = await stored_client.responses.create(
        model="m", input=[{"role": "user", "content": "first"}, {"role": "user", "content": "second"}]
    )
    retrieved = await stored_client.responses.retrieve(created.id)
    assert dump(retrieved) == dump(created)
    page = await stored_client.responses.input_items.list(created.id)
    assert [dump(i)["content"][0]["text"] for i in page.data] == ["second", "first"]  # desc by default
    page = await stored_client.responses.input_items.list(created.id, order="asc", limit=1)
    assert [dump(i)["content"][0]["text"] for i in page.data] == ["first"] and page.has_more
    with pytest.raises(openai.NotFoundError) as missing:
        await stored_client.responses.retrieve("resp_nope")
    assert missing.value.body == {
        "message": "Response with id 'resp_nope' not found.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    await stored_client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await stored_client.responses.retrieve(created.id)
    unstored = await stored_client.responses.create(model="m", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        await stored_client.responses.retrieve(unstored.id)


async def test_the_store_follows_a_stream_as_it_goes(stored: FakeUpstream, stored_client: AsyncOpenAI) -> None:
    release = asyncio.Event()
    steps = rw.responses_steps([rw.message_item("Hi")], id="resp_streaming")
    steps[-1].wait = release
    stored.push(Script(steps=steps))
    async with stored_client.responses.stream(model="m", input="hi") as stream:
        async for event in stream:
            if event.type == "response.output_item.done":
                break
        assert stored.store is not None and stored.store.responses["resp_streaming"]["status"] == "in_progress"
        release.set()
        async for _ in stream:
            pass
    assert (await stored_client.responses.retrieve("resp_streaming")).status == "completed"


async def test_an_unknown_previous_response_is_refused(stored: FakeUpstream, stored_client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await stored_client.responses.create(model="m", input="hi", previous_response_id="resp_gone")
    assert refused.value.code == "previous_response_not_found" and refused.value.param == "previous_response_id"
    assert refused.value.message.endswith("Previous response with id 'resp_gone' not found.")


@pytest.mark.parametrize(
    "call", [build() for build, _ in BUILDERS if build()["type"] in rw.CALL_OUTPUT_TYPES], ids=lambda c: c["type"]
)
async def test_a_continuation_needs_every_tool_output(
    stored: FakeUpstream, stored_client: AsyncOpenAI, call: rw.Item
) -> None:
    stored.push(Script(json=rw.response_object([rw.message_item("I'll do it."), call], id="resp_calls")))
    first = await stored_client.responses.create(model="m", input="go")
    stored.push(Script(json=rw.response_object([rw.message_item("Done.")])))  # only a valid continuation gets it
    with pytest.raises(openai.BadRequestError) as refused:
        await stored_client.responses.create(model="m", input="next", previous_response_id=first.id)
    word = rw.CALL_WORDS[call["type"]]
    assert refused.value.body == {
        "message": f"No tool output found for {word} {call['call_id']}.",
        "type": "invalid_request_error",
        "param": "input",
        "code": None,
    }
    assert len(stored.scripts) == 1  # a refused request does not use up the model's answer
    answer = await stored_client.responses.create(
        model="m", input=sent(rw.tool_output(call)), previous_response_id=first.id
    )
    assert answer.output_text == "Done." and not stored.scripts
    with pytest.raises(openai.BadRequestError) as orphan:
        await stored_client.responses.create(
            model="m", input=sent(rw.tool_output(dict(call, call_id="call_unknown"))), previous_response_id=answer.id
        )
    assert error_body(orphan.value)["message"] == f"No tool call found for {word} output with call_id call_unknown."


async def test_calls_in_the_input_need_outputs_too(stored: FakeUpstream, stored_client: AsyncOpenAI) -> None:
    call = rw.function_call_item("call_inline")
    inline = {k: call[k] for k in ("type", "call_id", "name", "arguments")}
    with pytest.raises(openai.BadRequestError) as refused:
        await stored_client.responses.create(model="m", input=sent(inline))
    assert error_body(refused.value)["message"] == "No tool output found for function call call_inline."
    answer = await stored_client.responses.create(model="m", input=sent(inline, rw.tool_output(call)))
    assert answer.status == "completed"


async def test_without_enforcement_only_unknown_ids_are_refused() -> None:
    fake = FakeUpstream(store=True)
    await fake.start()
    try:
        api = AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
        fake.push(Script(json=rw.response_object([rw.function_call_item("call_1")])))
        first = await api.responses.create(model="m", input="go")
        second = await api.responses.create(model="m", input="no outputs", previous_response_id=first.id)
        assert second.previous_response_id == first.id
        await api.close()
    finally:
        await fake.close()


async def test_two_fakes_can_share_one_store() -> None:
    """One upstream behind two proxies: a conversation started on one continues on the other."""
    store = ResponsesStore()
    fakes = [FakeUpstream(store=store, enforce_tool_outputs=True), FakeUpstream(store=store, enforce_tool_outputs=True)]
    for fake in fakes:
        await fake.start()
    try:
        a, b = (AsyncOpenAI(base_url=f.base_url, api_key="sk-test", max_retries=0) for f in fakes)
        call = rw.function_call_item("call_shared")
        fakes[0].push(Script(steps=rw.responses_steps([call])))
        async with a.responses.stream(model="m", input="go") as stream:
            async for _ in stream:
                pass
            first = await stream.get_final_response()
        assert dump(await b.responses.retrieve(first.id))["output"][0]["call_id"] == "call_shared"
        with pytest.raises(openai.BadRequestError):
            await b.responses.create(model="m", input="skip it", previous_response_id=first.id)
        answer = await b.responses.create(
            model="m", input=sent(rw.tool_output(call, "sunny")), previous_response_id=first.id
        )
        assert answer.previous_response_id == first.id and set(store.responses) == {first.id, answer.id}
        await a.close()
        await b.close()
    finally:
        for fake in fakes:
            await fake.close()
