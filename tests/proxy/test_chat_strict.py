"""The chat interceptor is a strict reader: what it cannot read unambiguously is a fault, never a pass.

Each hostile stream or body here once delivered (or could deliver) a denied
call to the client. Now the stream ends with an SSE ``error`` event (no
``[DONE]``) and a non-stream answer is a 502, and the denied call is nowhere
in what the client got.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import ALLOW_PARIS_WEATHER, Celgate, OpenAIFactory, StartCelgate, write_policy
from tests.helpers.fakeupstream import FakeUpstream, Script, Step, chat_chunk, completion, sse, tool_call_stream

MESSAGES = [{"role": "user", "content": "hi"}]
POLICY = (
    ALLOW_PARIS_WEATHER
    + """\
  - name: lookups
    on: tool_call
    tools: ["lookup"]
    effect: allow
"""
)
DENIED = "shell.exec"


def call_delta(
    index: Any,
    *,
    call_id: str | None = None,
    name: str | None = None,
    arguments: str | None = None,
    kind: str | None = "function",
) -> dict[str, Any]:
    part: dict[str, Any] = {"index": index}
    if call_id is not None:
        part["id"] = call_id
    if kind is not None:
        part["type"] = kind
    function = {k: v for k, v in (("name", name), ("arguments", arguments)) if v is not None}
    if function:
        part["function"] = function
    return chat_chunk({"tool_calls": [part]})


def stream_of(*chunks: Any, done: bool = True) -> list[Step]:
    steps = [Step(sse(chat_chunk({"role": "assistant", "content": None})))]
    steps += [Step(c if isinstance(c, bytes) else sse(c)) for c in chunks]
    if done:
        steps.append(Step(b"data: [DONE]\n\n"))
    return steps


async def post_stream(
    http: aiohttp.ClientSession, gate: Celgate, steps: list[Step], upstream: FakeUpstream, **headers: str
) -> bytes:
    upstream.push(Script(steps=steps, headers=headers))
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    async with http.post(gate.url + "/chat/completions", json=body) as response:
        assert response.status == 200
        return await response.read()


def called_tools(out: bytes) -> list[str]:
    """The tool names a client assembles from the stream (any event that parses as a chunk)."""
    names: dict[tuple[int, Any], str] = {}
    for event in out.split(b"\n\n"):
        data = b"\n".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
        try:
            chunk = json.loads(data)
        except ValueError:
            continue
        for choice in chunk.get("choices") or [] if isinstance(chunk, dict) else []:
            for part in (choice.get("delta") or {}).get("tool_calls") or []:
                key = (choice.get("index", 0), part.get("index"))
                names[key] = names.get(key, "") + ((part.get("function") or {}).get("name") or "")
    return list(names.values())


def assert_never_delivered(out: bytes) -> None:
    """The denied call never reaches the client; a fault ends the stream without a fake [DONE] after it."""
    assert DENIED not in called_tools(out), out
    if b"event: error" in out:
        assert b"upstream_unreadable" in out and b"[DONE]" not in out.split(b"event: error")[1], out


def assert_faulted(out: bytes) -> None:
    assert b"event: error" in out and b"upstream_unreadable" in out, out
    assert_never_delivered(out)


HOSTILE_STREAMS: dict[str, list[Any]] = {
    "a new name after an allowed decision": [
        call_delta(0, call_id="c1", name="lookup", arguments='{"q":'),
        call_delta(0, name=".exec", arguments='"x"}', kind=None),
        call_delta(0, name=DENIED, kind=None),
    ],
    "the same index reused for a second call": [
        call_delta(0, call_id="c1", name="lookup", arguments="{}"),
        call_delta(0, call_id="c2", name=DENIED, arguments="{}"),
    ],
    "a delta without index": [
        {
            **chat_chunk(
                {"tool_calls": [{"id": "c1", "type": "function", "function": {"name": DENIED, "arguments": "{}"}}]}
            )
        },
    ],
    "index 0.0": [call_delta(0.0, call_id="c1", name=DENIED, arguments="{}")],
    "index as a string": [call_delta("0", call_id="c1", name=DENIED, arguments="{}")],
    "arguments after a decision on complete arguments": [
        call_delta(0, call_id="c1", name="get_weather", arguments='{"city": "Paris"}'),
        call_delta(1, call_id="c2", name="lookup", arguments="{}"),
        call_delta(0, arguments='{"city": "Rome"} ', kind=None),
    ],
    "a repeated key": [
        sse(call_delta(0, call_id="c1", name="lookup", arguments="{}")).replace(
            b'"name": "lookup"', b'"name": "lookup", "name": "shell.exec"'
        ),
    ],
    "a chunk that mentions tool calls but is not JSON": [b'data: {"choices": [{"delta": {"tool_calls": [\n\n'],
    "a byte-order mark before the field": [
        b"\xef\xbb\xbf" + sse(call_delta(0, call_id="c1", name=DENIED, arguments="{}"))
    ],
    "an unknown field line": [
        b"dat\xc3\xa1: "
        + json.dumps(call_delta(0, call_id="c", name=DENIED)).encode()
        + b'\ndata: {"choices": [], "tool_calls": 1}\n\n'
    ],
    "a function and a custom body in one delta": [
        chat_chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "c",
                        "type": "function",
                        "function": {"name": "lookup"},
                        "custom": {"name": DENIED, "input": "x"},
                    }
                ]
            }
        ),
    ],
    "a call after its choice finished": [
        call_delta(0, call_id="c1", name="lookup", arguments="{}"),
        chat_chunk({}, "tool_calls"),
        call_delta(1, call_id="c2", name=DENIED, arguments="{}"),
    ],
}


@pytest.mark.parametrize("name", list(HOSTILE_STREAMS))
async def test_a_hostile_stream_is_a_fault(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, name: str
) -> None:
    out = await post_stream(http, gate, stream_of(*HOSTILE_STREAMS[name], done=False), upstream)
    assert_faulted(out)


async def test_an_escaped_key_is_read_as_clients_read_it(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    """``"tool\\u005fcalls"`` is ``tool_calls`` to every JSON parser: celgate decides it (and strips it)."""
    escaped = sse(chat_chunk({})).replace(
        b'"delta": {}',
        b'"delta": {"tool\\u005fcalls": [{"index": 0, "id": "c1", '
        b'"type": "function", "function": {"name": "shell.exec", "arguments": "{}"}}]}',
    )
    out = await post_stream(http, gate, stream_of(escaped, chat_chunk({}, "tool_calls")), upstream)
    assert_never_delivered(out)
    assert b"denied by policy" in out and out.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", ""])
@pytest.mark.parametrize("status", [200, 201, 206])
async def test_sse_under_any_label_is_intercepted(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, content_type: str, status: int
) -> None:
    """A client that asked for a stream parses SSE whatever the headers say: so does celgate."""
    upstream.push(
        Script(status=status, steps=tool_call_stream([("c1", DENIED, "{}")]), headers={"Content-Type": content_type})
    )
    async with http.post(
        gate.url + "/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True}
    ) as response:
        out = await response.read()
    assert_never_delivered(out)
    assert b"denied by policy" in out


async def test_tool_calls_after_done_are_a_fault(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    out = await post_stream(
        http,
        gate,
        stream_of(b"data: [DONE]\n\n", call_delta(0, call_id="c1", name=DENIED, arguments="{}"), done=False),
        upstream,
    )
    assert_never_delivered(out)
    assert out.rstrip().endswith(b'"status":502}}'), out


async def test_the_openai_client_never_sees_a_denied_call_in_a_text_plain_stream(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    upstream.push(Script(steps=tool_call_stream([("c1", DENIED, "{}")]), headers={"Content-Type": "text/plain"}))
    stream = await oai(gate.url).chat.completions.create(model="m", messages=MESSAGES, stream=True)
    names = [
        c.function.name
        for chunk in [x async for x in stream]
        for ch in chunk.choices
        for c in ch.delta.tool_calls or []
        if c.function
    ]
    assert DENIED not in names


HOSTILE_BODIES: dict[str, bytes] = {
    "utf-16": json.dumps(completion(None, tool_calls=[("c1", DENIED, "{}")])).encode("utf-16"),
    "utf-16-le without BOM": json.dumps(completion(None, tool_calls=[("c1", DENIED, "{}")])).encode("utf-16-le"),
    "a leading BOM": b"\xef\xbb\xbf" + json.dumps(completion(None, tool_calls=[("c1", DENIED, "{}")])).encode(),
    "a repeated key": json.dumps(completion(None, tool_calls=[("c1", "lookup", "{}")]))
    .replace('"name": "lookup"', '"name": "lookup", "name": "shell.exec"')
    .encode(),
    "NaN": json.dumps(completion(None, tool_calls=[("c1", DENIED, "{}")]))
    .replace('"created": 1700000000', '"created": NaN')
    .encode(),
    "tool_calls not a list": json.dumps(
        {
            **completion(None),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "tool_calls": {"function": {"name": DENIED}}},
                }
            ],
        }
    ).encode(),
}


@pytest.mark.parametrize("name", list(HOSTILE_BODIES))
@pytest.mark.parametrize("status", [200, 201])
async def test_a_hostile_completion_is_a_502(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, name: str, status: int
) -> None:
    upstream.push(
        Script(status=status, steps=[Step(HOSTILE_BODIES[name])], headers={"Content-Type": "application/json"})
    )
    async with http.post(gate.url + "/chat/completions", json={"model": "m", "messages": MESSAGES}) as response:
        body = await response.read()
        assert response.status == 502, body
    assert DENIED.encode() not in body and DENIED.encode("utf-16-le") not in body


async def test_an_escaped_key_in_a_completion_is_decided(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    body = json.dumps(completion(None, tool_calls=[("c1", DENIED, "{}")])).replace(
        '"tool_calls"', '"tool\\u005fcalls"', 1
    )
    upstream.push(Script(steps=[Step(body.encode())], headers={"Content-Type": "application/json"}))
    answer = await oai(gate.url).chat.completions.create(model="m", messages=MESSAGES)
    assert answer.choices[0].message.tool_calls is None and "denied by policy" in (
        answer.choices[0].message.content or ""
    )


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_on_a_governed_route_is_a_fault(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, status: int
) -> None:
    """Following it, the client would fetch its answer from elsewhere, past celgate."""
    upstream.push(Script(status=status, json={}, headers={"Location": "http://evil.example/v1/chat/completions"}))
    async with http.post(
        gate.url + "/chat/completions", json={"model": "m", "messages": MESSAGES}, allow_redirects=False
    ) as response:
        assert response.status == 502
        assert "Location" not in response.headers


async def test_an_upstream_error_status_passes_verbatim(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.push(
        Script(
            status=429,
            json={"error": {"message": "slow down", "type": "rate_limit", "param": None, "code": None}},
            headers={"Retry-After": "3"},
        )
    )
    async with http.post(gate.url + "/chat/completions", json={"model": "m", "messages": MESSAGES}) as response:
        assert response.status == 429 and response.headers["Retry-After"] == "3"
        assert (await response.json())["error"]["message"] == "slow down"


# A deny-list policy: what no rule denies is allowed, so a call read under the wrong type or name passes.
DENY_LIST = """\
version: 1
defaults: {decision: allow}
rules:
  - name: no-shell-functions
    on: tool_call
    tools: ["shell*"]
    when: tool.type == "function"
    effect: deny
"""
# Calls a client would read as the function shell.exec (the openai SDK's stream types know only `function`).
TYPE_CONFUSED: dict[str, dict[str, Any]] = {
    "a custom type with a function body": {"type": "custom", "function": {"name": DENIED, "arguments": "{}"}},
    "an unknown type with a function body": {"type": "mcp", "function": {"name": DENIED, "arguments": "{}"}},
    "a function type with a custom body": {"type": "function", "custom": {"name": DENIED, "input": "x"}},
}
FUNCTION_CALL = {"type": "function", "function": {"name": DENIED, "arguments": "{}"}}


@pytest.fixture
async def deny_list_gate(upstream: FakeUpstream, start_celgate: StartCelgate, tmp_path: Path) -> Celgate:
    policies = write_policy(tmp_path, DENY_LIST, "deny-list.yaml")
    return await start_celgate(upstream=upstream.base_url, no_policy=False, policies=policies)


@pytest.mark.parametrize("name", list(TYPE_CONFUSED))
async def test_a_call_of_confused_type_is_a_fault(
    deny_list_gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, name: str
) -> None:
    part = {"index": 0, "id": "c1", **TYPE_CONFUSED[name]}
    out = await post_stream(http, deny_list_gate, stream_of(chat_chunk({"tool_calls": [part]})), upstream)
    assert b"event: error" in out and b"upstream_unreadable" in out and DENIED.encode() not in out, out
    message = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", **TYPE_CONFUSED[name]}]}
    choice = {"index": 0, "finish_reason": "tool_calls", "message": message}
    upstream.push(Script(json={**completion(None), "choices": [choice]}))
    async with http.post(deny_list_gate.url + "/chat/completions", json={"model": "m", "messages": MESSAGES}) as r:
        assert r.status == 502 and DENIED.encode() not in await r.read()


async def test_a_message_in_a_chunk_or_a_delta_in_a_completion_is_a_fault(
    deny_list_gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    """Some clients read either shape in either place: the other shape is ambiguous, so a fault."""
    message = {"role": "assistant", "tool_calls": [{"index": 0, "id": "c1", **FUNCTION_CALL}]}
    chunk = {**chat_chunk({}), "choices": [{"index": 0, "message": message, "finish_reason": None}]}
    out = await post_stream(http, deny_list_gate, stream_of(chunk), upstream)
    assert b"event: error" in out and DENIED.encode() not in out, out
    upstream.push(Script(json={**completion(None), "choices": [{"index": 0, "delta": message, "finish_reason": None}]}))
    async with http.post(deny_list_gate.url + "/chat/completions", json={"model": "m", "messages": MESSAGES}) as r:
        assert r.status == 502 and DENIED.encode() not in await r.read()


def named_call(index: int, call_id: str, name: str, arguments: str, choice: int = 0) -> dict[str, Any]:
    part = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    return {**chat_chunk({}), "choices": [{"index": choice, "delta": {"tool_calls": [part]}, "finish_reason": None}]}


# Clients place calls and choices by the order they first appear, not by their index (the openai SDK inserts
# tool call 5 at place 0 of an empty list, and appends an unknown choice): two calls celgate decides apart,
# "sh" and "ell.exec", would merge into shell.exec.
MERGING: dict[str, tuple[int, list[dict[str, Any]]]] = {
    "a tool call index that skips places": (
        1, [named_call(5, "c1", "sh", "{"), named_call(0, "c2", "ell.exec", "}")],
    ),
    "choices out of order": (
        2, [named_call(0, "c1", "sh", "{", choice=1), named_call(0, "c2", "ell.exec", "}", choice=0)],
    ),
    "a call in a choice the request did not ask for": (
        1, [named_call(0, "c1", "sh", "{"), named_call(0, "c2", "ell.exec", "}", choice=-1)],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(MERGING))
async def test_calls_a_client_would_merge_are_a_fault(
    deny_list_gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, name: str
) -> None:
    n, chunks = MERGING[name]
    upstream.push(Script(steps=[*(Step(sse(chunk)) for chunk in chunks), Step(b"data: [DONE]\n\n")]))
    body = {"model": "m", "messages": MESSAGES, "stream": True, "n": n}
    async with http.post(deny_list_gate.url + "/chat/completions", json=body) as response:
        out = await response.read()
    assert b"event: error" in out and b"upstream_unreadable" in out and b"ell.exec" not in out, out


async def test_events_before_a_fault_in_the_same_read_reach_the_client_first(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    """Events that need no look are written before the interceptor reads the rest of that read."""
    hostile = sse(call_delta("0", call_id="c1", name=DENIED, arguments="{}"))
    out = await post_stream(http, gate, [Step(sse(chat_chunk({"content": "Hello"})) + hostile)], upstream)
    assert_faulted(out)
    before, _, _ = out.partition(b"event: error")
    assert b'"content": "Hello"' in before, out
