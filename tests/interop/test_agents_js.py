"""The OpenAI Agents SDK for JS (``@openai/agents``) through celgate, on its default model: the Responses API.

The SDK runs the tools the model calls. Each tool body appends to a log file,
so the proof that a denied call never reached the SDK is a side effect that
never happened, whether the run ended in an answer or an error. Skipped (with
the reason) only when node/npm are missing or the registry is unreachable
(tests/helpers/node.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Celgate
from tests.helpers.fakeupstream import FakeUpstream
from tests.helpers.interop import (
    DELETE,
    DENIED_MODEL,
    MODEL,
    SHELL,
    WEATHER,
    arguments,
    cut_stream,
    reply,
    upstream_error,
)
from tests.helpers.node import NodeEnv, run_node

pytestmark = pytest.mark.timeout(240)

RAN_WEATHER = [{"name": "get_weather", "arguments": arguments(WEATHER)}]


async def run_agent(
    gate: Celgate, tmp_path: Path, *, expect_error: bool = False, **args: Any
) -> tuple[dict[str, Any], list[Any]]:
    """``agents_run.cjs``'s result, and every tool body that ran, from the log the tools append to."""
    log = tmp_path / "ran.jsonl"
    result = await run_node("agents_run", gate.url, args={"ranLog": str(log), **args}, expect_error=expect_error)
    ran = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, ran


@pytest.mark.parametrize("stream", [False, True])
async def test_text(node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream, tmp_path: Path, stream: bool) -> None:
    upstream.push(reply("responses", stream, text="It is sunny"))
    result, ran = await run_agent(gate, tmp_path, stream=stream)
    assert result["final_output"] == "It is sunny" and ran == []
    assert upstream.requests[0].path == "/v1/responses"
    if stream:
        assert result["text_deltas"] == 3  # one per word: the stream arrived as a stream


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("calls", [(WEATHER,), (SHELL, WEATHER)], ids=["alone", "after-a-denied-one"])
async def test_an_allowed_tool_runs_with_its_arguments(
    node_env: NodeEnv,
    gate: Celgate,
    upstream: FakeUpstream,
    tmp_path: Path,
    stream: bool,
    calls: tuple[tuple[str, str, str], ...],
) -> None:
    upstream.push(reply("responses", stream, calls=calls), reply("responses", stream, text="Sunny in Paris"))
    result, ran = await run_agent(gate, tmp_path, stream=stream)
    assert ran == RAN_WEATHER
    assert result["final_output"] == "Sunny in Paris"
    call = next(i["raw"] for i in result["items"] if i["type"] == "tool_call_item")
    assert (call["callId"], call["name"], call["arguments"]) == WEATHER
    outputs = [i for i in upstream.requests[1].body["input"] if i.get("type") == "function_call_output"]
    assert [o["call_id"] for o in outputs] == [WEATHER[0]]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_denied_tool_never_runs(
    node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream, tmp_path: Path, stream: bool
) -> None:
    upstream.push(reply("responses", stream, calls=(SHELL,)), reply("responses", stream, text="unreachable"))
    result, ran = await run_agent(gate, tmp_path, stream=stream)
    assert ran == []
    assert "run_shell denied by policy" in result["final_output"]
    assert "rm -rf" not in str(result["items"])
    assert len(upstream.requests) == 1
    assert [t["name"] for t in upstream.requests[0].body["tools"]] == ["get_weather"]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_call_that_fails_the_response_never_runs(
    node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream, tmp_path: Path, stream: bool
) -> None:
    """``action: error``: a 403 before a stream starts, an in-band error event after; the run fails either way."""
    upstream.push(reply("responses", stream, calls=(DELETE,)), reply("responses", stream, text="unreachable"))
    result, ran = await run_agent(gate, tmp_path, stream=stream, expect_error=True)
    assert ran == []
    assert "never-delete" in result["error"]["message"]
    if not stream:
        assert (result["error"]["name"], result["error"]["status"]) == ("PermissionDeniedError", 403)


@pytest.mark.parametrize("stream", [False, True])
async def test_previous_response_id_chains_past_a_stripped_call(
    node_env: NodeEnv, stateful_gate: Celgate, stateful_upstream: FakeUpstream, tmp_path: Path, stream: bool
) -> None:
    """On a server-kept conversation each turn sends only its new items; the API wants an output for every call
    of the stored response, so celgate answers the one it stripped."""
    upstream = stateful_upstream
    upstream.push(
        reply("responses", False, text="Hi"),
        reply("responses", stream, calls=(SHELL, WEATHER)),
        reply("responses", stream, text="Sunny in Paris"),
    )
    result, ran = await run_agent(stateful_gate, tmp_path, stream=stream, chain=True)
    assert result["final_output"] == "Sunny in Paris" and ran == RAN_WEATHER
    *_, follow_up = (r.body for r in upstream.requests if r.method == "POST")
    assert upstream.store is not None and follow_up["previous_response_id"] in upstream.store.responses
    outputs = {i["call_id"]: i["output"] for i in follow_up["input"] if i.get("type") == "function_call_output"}
    assert outputs[WEATHER[0]] == "sunny" and "run_shell denied by policy" in outputs[SHELL[0]]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_policy_denial_is_permission_denied(
    node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream, tmp_path: Path, stream: bool
) -> None:
    result, _ = await run_agent(gate, tmp_path, stream=stream, model=DENIED_MODEL, expect_error=True)
    error = result["error"]
    assert (error["name"], error["status"], error["code"]) == ("PermissionDeniedError", 403, "policy_denied")
    assert "this model is not for this app" in error["message"]
    assert upstream.requests == []


async def test_an_upstream_rate_limit_is_rate_limit_error(
    node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.push(upstream_error(429))
    result, _ = await run_agent(gate, tmp_path, expect_error=True)
    assert (result["error"]["name"], result["error"]["status"]) == ("RateLimitError", 429)


async def test_a_cut_stream_raises(node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.push(cut_stream("responses"))
    result, _ = await run_agent(gate, tmp_path, stream=True, expect_error=True)
    assert "cut" in result["error"]["message"], result["error"]


async def test_models(node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream) -> None:
    """openai-node's ``models.list()``: the client an Agents SDK app already holds."""
    result = await run_node("models_list", gate.url)
    assert result["ids"] == [MODEL]
    assert [(r.method, r.path) for r in upstream.requests] == [("GET", "/v1/models")]
