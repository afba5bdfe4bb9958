"""Tool calls celgate cannot read one way never reach the app, on every wire format, with the real client.

Names too: a deny rule on ``shell.*`` must not miss ``shell.exec `` (an app
that strips the name would run ``shell.exec``), nor ``o1`` spelled ``o1 ``.

The policy allows every call except ``read_file`` under ``/etc``, guarded
with ``has()``: arguments read as ``{}`` would skip the guard. A model
(prompt-injected) sends a repeated key whose last value is harmless; an app
whose JSON parser keeps the first key would open ``/etc/passwd``.
"""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from tests.helpers import Celgate, OpenAIFactory
from tests.helpers import responses_wire as rw
from tests.helpers.fakeupstream import FakeUpstream, Script, Step, chat_chunk, completion, sse, tool_call_stream

POLICY = """\
version: 1
defaults: {decision: allow}
rules:
  - name: no-etc
    on: tool_call
    tools: ["read_file"]
    when: 'has(tool.arguments.path) && tool.arguments.path.startsWith("/etc")'
    effect: deny
    reason: not /etc
  - name: no-shell
    on: tool_call
    tools: ["shell.*"]
    effect: deny
  - name: no-o1
    on: request
    models: ["o1"]
    effect: deny
  - name: gpt-4o-runs-nothing
    on: tool_call
    models: ["gpt-4o*"]
    tools: ["run_*"]
    effect: deny
  - name: cap-max-tokens
    on: request
    when: has(request.max_tokens) && request.max_tokens > 1000
    effect: deny
  - name: no-big-embeddings
    on: request
    models: ["text-embedding-3-large"]
    effect: deny
  - name: not-the-secret-project
    on: request
    models: ["m"]
    when: '"openai-project" in request.headers && request.headers["openai-project"] == "proj_secret"'
    effect: deny
"""

MESSAGES = [{"role": "user", "content": "hi"}]
SAFE = '{"path": "/workspace/a"}'
TWICE = '{"path": "/etc/passwd", "path": "/workspace/a"}'
GARBAGE = '{"path": "/etc/passwd"}\n{"path": "/workspace/a"}'
WHY = "the tool arguments are not one unambiguous JSON object"


@pytest.mark.parametrize("arguments", [TWICE, GARBAGE])
async def test_chat_tool_calls(gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, arguments: str) -> None:
    upstream.push(Script(json=completion(None, [("c1", "read_file", arguments), ("c2", "read_file", SAFE)])))
    answer = await oai(gate.url).chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    message = answer.choices[0].message
    assert [c.id for c in message.tool_calls or []] == ["c2"]


@pytest.mark.parametrize("arguments", [TWICE, GARBAGE])
async def test_streamed_chat_tool_calls(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, arguments: str
) -> None:
    upstream.push(Script(steps=tool_call_stream([("c1", "read_file", arguments), ("c2", "read_file", SAFE)])))
    stream = await oai(gate.url).chat.completions.create(model="m", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    seen = json.dumps([chunk.model_dump() async for chunk in stream])
    assert "/etc/passwd" not in seen and '"c2"' in seen and '"c1"' not in seen


async def test_a_legacy_function_call(gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory) -> None:
    body = completion(None)
    body["choices"][0]["message"]["function_call"] = {"name": "read_file", "arguments": TWICE}
    body["choices"][0]["finish_reason"] = "function_call"
    upstream.push(Script(json=body))
    answer = await oai(gate.url).chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    choice = answer.choices[0]
    assert choice.message.function_call is None and WHY in (choice.message.content or "")


async def test_a_streamed_legacy_function_call(gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory) -> None:
    head = {"role": "assistant", "content": None, "function_call": {"name": "read_file", "arguments": ""}}
    steps = [sse(chat_chunk(head)), sse(chat_chunk({"function_call": {"arguments": TWICE}}))]
    steps += [sse(chat_chunk({}, "function_call")), b"data: [DONE]\n\n"]
    upstream.push(Script(steps=[Step(frame) for frame in steps]))
    stream = await oai(gate.url).chat.completions.create(model="m", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    seen = json.dumps([chunk.model_dump() async for chunk in stream])
    assert "/etc/passwd" not in seen and WHY in seen


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_function_calls(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, stream: bool
) -> None:
    output = [rw.function_call_item("c1", "read_file", TWICE), rw.function_call_item("c2", "read_file", SAFE)]
    if stream:
        upstream.push(Script(steps=rw.responses_steps(output, split_arguments=3)))
        events = [e async for e in await oai(gate.url).responses.create(model="m", input="x", stream=True)]
        seen = json.dumps([e.model_dump() for e in events])
        final = events[-1].response.output  # type: ignore[union-attr]
    else:
        upstream.push(Script(json=rw.response_object(output)))
        final = (await oai(gate.url).responses.create(model="m", input="x")).output
        seen = json.dumps([item.model_dump() for item in final])
    assert [i.call_id for i in final if i.type == "function_call"] == ["c2"]
    assert "/etc/passwd" not in seen


@pytest.mark.parametrize("name", [" shell.exec", "\tshell.exec", "shell\u200b.exec", "\uff53hell.exec"])
async def test_a_name_an_app_might_normalise_is_stripped(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, name: str
) -> None:
    upstream.push(Script(json=completion(None, [("c1", name, "{}"), ("c2", "read_file", SAFE)])))
    answer = await oai(gate.url).chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert [c.id for c in answer.choices[0].message.tool_calls or []] == ["c2"]
    upstream.push(Script(json=rw.response_object([rw.function_call_item("c1", name, "{}")])))
    output = (await oai(gate.url).responses.create(model="m", input="x")).output
    assert [i for i in output if i.type == "function_call"] == []


@pytest.mark.parametrize("model", ["o1 ", "o1\u200b"])
async def test_a_model_name_an_upstream_might_normalise_is_refused(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, model: str
) -> None:
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await oai(gate.url).chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
    assert "not a plausible model name" in str(denied.value)
    assert upstream.requests == []


async def raw_post(
    gate: Celgate, headers: list[tuple[str, str]], body: bytes, path: str = "/v1/chat/completions"
) -> tuple[int, bytes]:
    """One POST with exactly these header lines (clients merge a repeated header); the status and the reply."""
    host, port = gate.root.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [f"{name}: {value}" for name, value in [("Host", "x"), ("Content-Length", str(len(body))), *headers]]
    head = "\r\n".join([f"POST {path} HTTP/1.1", *lines, "Connection: close", "", ""])
    writer.write(head.encode() + body)
    reply = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return int(reply.split(b" ", 2)[1]), reply


@pytest.mark.parametrize("second", ["proj_other", "proj_secret"])
async def test_a_header_sent_twice_with_two_values_is_a_400(gate: Celgate, upstream: FakeUpstream, second: str) -> None:
    """Policy would read one copy and the upstream another (``OpenAI-Project`` picks what is billed)."""
    body = json.dumps({"model": "m", "messages": MESSAGES}).encode()
    status, reply = await raw_post(gate, [("OpenAI-Project", "proj_secret"), ("openai-project", second)], body)
    if second == "proj_secret":  # the same value twice reads one way: the rule decides
        assert status == 403
    else:
        assert status == 400 and b"ambiguous_header" in reply
    assert upstream.requests == []


async def test_a_header_no_rule_for_the_request_reads_is_not_checked(gate: Celgate, upstream: FakeUpstream) -> None:
    """Only ``not-the-secret-project`` reads headers, and only for model ``m``: for another model the map is
    not built, so a header sent twice is nobody's to misread and goes upstream as sent."""
    upstream.push(Script(json=completion("ok")))
    body = json.dumps({"model": "gpt-x", "messages": MESSAGES}).encode()
    status, _ = await raw_post(gate, [("OpenAI-Project", "proj_secret"), ("openai-project", "proj_other")], body)
    assert status == 200 and len(upstream.requests) == 1


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_a_body_with_a_non_json_number_is_a_400(gate: Celgate, upstream: FakeUpstream, constant: str) -> None:
    """``NaN > 1.0`` is false in CEL, so a rule capping ``temperature`` would pass it; strict upstreams refuse it."""
    body = f'{{"model": "m", "messages": [], "temperature": {constant}}}'.encode()
    status, reply = await raw_post(gate, [("Content-Type", "application/json")], body)
    assert status == 400 and b"invalid_json" in reply
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        # Python upstreams read bytes with a BOM: so does celgate, and the model is decided
        (b'\xef\xbb\xbf{"model": "text-embedding-3-large", "input": "x"}', 403, b"policy_denied"),
        (b'{"model": "text-embedding-3-large", "input": "x"} trailing', 400, b"invalid_json"),  # Go reads one value
        (b'{"model": "text-embedding-3-large", "input": "x", "dimensions": NaN}', 400, b"invalid_json"),
        (b'{"model": "text-embedding-3-large", "input": "x"', 400, b"invalid_json"),  # cut short
    ],
)
async def test_a_tool_free_body_that_is_almost_json_is_decided_or_refused(
    gate: Celgate, upstream: FakeUpstream, body: bytes, status: int, code: bytes
) -> None:
    """Read as "no model", it passed rules on the model while a lenient upstream read the denied one."""
    answer, reply = await raw_post(gate, [("Content-Type", "application/json")], body, "/v1/embeddings")
    assert answer == status and code in reply
    assert upstream.requests == []


@pytest.mark.parametrize(
    "limits",
    [
        {"max_completion_tokens": 5000},  # chat's current name for max_tokens
        {"max_tokens": 10, "max_completion_tokens": 5000},
        {"max_tokens": 10, "max_output_tokens": 5000},  # the Responses API reads max_output_tokens
    ],
)
async def test_every_name_of_the_output_limit_is_request_max_tokens(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, limits: dict[str, int]
) -> None:
    """``request.max_tokens`` is the largest limit the body sets under any name an upstream reads."""
    with pytest.raises(openai.PermissionDeniedError):
        await oai(gate.url).chat.completions.create(model="m", messages=MESSAGES, extra_body=limits)  # type: ignore[arg-type]
    assert upstream.requests == []


async def test_a_stored_call_meets_model_scoped_deny_rules(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    """A read back carries no model (``request.model == ""``): a deny rule's ``models`` list matches it.

    A background response is polled with ``GET /v1/responses/{id}`` and the app runs the calls it finds.
    """
    run = rw.function_call_item("c1", "run_cmd", '{"cmd": "id"}')
    upstream.push(Script(json=rw.response_object([run], model="gpt-4o")))
    assert [
        i for i in (await oai(gate.url).responses.create(model="gpt-4o", input="x")).output if i.type != "message"
    ] == []
    upstream.push(Script(json=rw.response_object([run], id="resp_bg", model="gpt-4o-2024-08-06")))
    stored = await oai(gate.url).responses.retrieve("resp_bg")
    assert [i for i in stored.output if i.type == "function_call"] == []
    upstream.push(Script(json=completion(None, [("c1", "run_cmd", "{}")])))
    stored_chat = await oai(gate.url).chat.completions.retrieve("chatcmpl-fake")
    assert stored_chat.choices[0].message.tool_calls in (None, [])
