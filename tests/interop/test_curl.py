"""curl through celgate: the README's ``curl -sN`` calls, streamed and not, on both APIs.

curl shows the bytes as they are, so these tests read the wire exactly: the
status line, the SSE frames of a stream and its ``[DONE]``, the error body.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Celgate, assert_openai_error
from tests.helpers import responses_wire as rw
from tests.helpers.fakeupstream import FakeUpstream
from tests.helpers.interop import (
    CHAT_TOOLS,
    DELETE,
    DENIED_MODEL,
    MODEL,
    RESPONSES_TOOLS,
    SHELL,
    WEATHER,
    Api,
    cut_stream,
    reply,
    upstream_error,
)

CURL = shutil.which("curl")
pytestmark = [pytest.mark.skipif(CURL is None, reason="curl is not on PATH"), pytest.mark.timeout(60)]

MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
STATUS = "\n%{http_code}"  # curl -w: the status on a line of its own after the body


async def curl(url: str, body: dict[str, Any] | str | None = None) -> tuple[int, str]:
    """``curl -sN`` as the README runs it: the status and the body as received (``body`` may be ``@file``)."""
    assert CURL is not None
    command = [CURL, "-sN", "-w", STATUS, url, "-H", "Authorization: Bearer sk-anything"]
    if body is not None:
        command += ["-H", "Content-Type: application/json", "-d", body if isinstance(body, str) else json.dumps(body)]
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stdout
    text, _, status = stdout.decode().rpartition("\n")
    return int(status), text


def chat_chunks(text: str) -> list[dict[str, Any]]:
    """A chat stream's chunks; asserts it ends with ``[DONE]`` (a cut stream would not)."""
    frames = [frame.data for frame in rw.parse_sse(text)]
    assert frames[-1] == "[DONE]", frames
    return [json.loads(data) for data in frames[:-1]]


async def test_chat_text(gate: Celgate, upstream: FakeUpstream) -> None:
    upstream.push(reply("chat", False, text="It is sunny"))
    status, text = await curl(gate.url + "/chat/completions", {"model": MODEL, "messages": MESSAGES})
    assert status == 200
    assert json.loads(text)["choices"][0]["message"]["content"] == "It is sunny"


async def test_chat_stream(gate: Celgate, upstream: FakeUpstream) -> None:
    upstream.push(reply("chat", True, text="It is sunny"))
    status, text = await curl(gate.url + "/chat/completions", {"model": MODEL, "messages": MESSAGES, "stream": True})
    assert status == 200
    deltas = [c["choices"][0]["delta"].get("content") or "" for c in chat_chunks(text) if c["choices"]]
    assert "".join(deltas) == "It is sunny"


@pytest.mark.parametrize("call", [WEATHER, SHELL], ids=["allowed", "denied"])
async def test_chat_stream_tool_calls(gate: Celgate, upstream: FakeUpstream, call: tuple[str, str, str]) -> None:
    upstream.push(reply("chat", True, calls=(call,)))
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "tools": CHAT_TOOLS}
    status, text = await curl(gate.url + "/chat/completions", body)
    assert status == 200
    deltas = [c["choices"][0]["delta"] for c in chat_chunks(text) if c["choices"]]
    calls = [part for d in deltas for part in d.get("tool_calls") or []]
    if call is WEATHER:
        assert [c["id"] for c in calls if "id" in c] == [WEATHER[0]]
        assert "".join(c["function"].get("arguments", "") for c in calls) == WEATHER[2]
    else:
        assert calls == [] and "rm -rf" not in text
        assert "run_shell denied by policy" in "".join(d.get("content") or "" for d in deltas)


@pytest.mark.parametrize("call", [None, WEATHER, SHELL], ids=["text", "allowed", "denied"])
async def test_responses_stream(gate: Celgate, upstream: FakeUpstream, call: tuple[str, str, str] | None) -> None:
    upstream.push(reply("responses", True, text=None if call else "It is sunny", calls=(call,) if call else ()))
    body = {"model": MODEL, "input": "What is the weather in Paris?", "stream": True, "tools": RESPONSES_TOOLS}
    status, text = await curl(gate.url + "/responses", body)
    assert status == 200
    response = rw.check_stream(rw.stream_events(text))
    output = [(i["type"], i.get("name"), i.get("arguments")) for i in response["output"]]
    if call is WEATHER:
        assert output == [("function_call", "get_weather", WEATHER[2])]
    else:
        assert output == [("message", None, None)] and "rm -rf" not in text
        said = response["output"][0]["content"][0]["text"]
        assert said == "It is sunny" if call is None else "run_shell denied by policy" in said


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_a_call_that_fails_the_response_ends_the_stream_with_policy_denied(
    gate: Celgate, upstream: FakeUpstream, api: Api
) -> None:
    upstream.push(reply(api, True, calls=(DELETE,)))
    path, body = ("/chat/completions", {"messages": MESSAGES}) if api == "chat" else ("/responses", {"input": "Hi"})
    status, text = await curl(gate.url + path, {"model": MODEL, "stream": True, **body})
    assert status == 200 and DELETE[0] not in text  # no part of the call went out
    frames = rw.parse_sse(text)
    assert frames[-1].event == "error" and "[DONE]" not in text
    error = assert_openai_error(json.loads(frames[-1].data), type_="policy_denied", code="policy_denied")
    assert error["status"] == 403 and "repositories are not deleted from here" in error["message"]


async def test_a_large_body_with_expect_100_continue(gate: Celgate, upstream: FakeUpstream, tmp_path: Path) -> None:
    """Past 1 MiB curl sends ``Expect: 100-continue`` and waits for the interim answer before the body."""
    upstream.push(reply("chat", True, text="It is sunny"))
    big = tmp_path / "body.json"
    big.write_text(json.dumps({"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x" * 2**21}]}))
    status, text = await curl(gate.url + "/chat/completions", f"@{big}")
    assert status == 200
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chat_chunks(text) if c["choices"]) == (
        "It is sunny"
    )
    assert len(upstream.requests[0].raw) == big.stat().st_size


@pytest.mark.parametrize("stream", [False, True])
async def test_a_policy_denial_is_a_403_error_body(gate: Celgate, upstream: FakeUpstream, stream: bool) -> None:
    status, text = await curl(
        gate.url + "/chat/completions", {"model": DENIED_MODEL, "messages": MESSAGES, "stream": stream}
    )
    assert status == 403
    error = assert_openai_error(json.loads(text), type_="policy_denied", code="policy_denied")
    assert "this model is not for this app" in error["message"]
    assert upstream.requests == []


async def test_an_upstream_error_passes_through(gate: Celgate, upstream: FakeUpstream) -> None:
    upstream.push(upstream_error(429))
    status, text = await curl(gate.url + "/chat/completions", {"model": MODEL, "messages": MESSAGES, "stream": True})
    assert status == 429
    assert_openai_error(json.loads(text), code="rate_limit_exceeded")


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_a_cut_stream_ends_with_an_error_event(gate: Celgate, upstream: FakeUpstream, api: Api) -> None:
    upstream.push(cut_stream(api))
    path, body = ("/chat/completions", {"messages": MESSAGES}) if api == "chat" else ("/responses", {"input": "Hi"})
    status, text = await curl(gate.url + path, {"model": MODEL, "stream": True, **body})
    assert status == 200  # the head went out before the fault
    frames = rw.parse_sse(text)
    assert frames[-1].event == "error" and "[DONE]" not in text
    assert_openai_error(json.loads(frames[-1].data), code="upstream_reset")


async def test_models(gate: Celgate, upstream: FakeUpstream) -> None:
    status, text = await curl(gate.url + "/models")
    assert status == 200
    assert [m["id"] for m in json.loads(text)["data"]] == [MODEL]
