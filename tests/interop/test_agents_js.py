"""The OpenAI Agents SDK for JS (``@openai/agents``) through celgate, on its default model: the Responses API.

The SDK runs the tools the model calls; the proof that a denied call never
reached it is that its ``execute`` never ran. Skipped (with the reason) only
when node/npm are missing or the registry is unreachable (tests/helpers/node.py).
"""

from __future__ import annotations

import pytest

from tests.helpers import Celgate
from tests.helpers.fakeupstream import FakeUpstream
from tests.helpers.interop import DENIED_MODEL, MODEL, SHELL, WEATHER, arguments, cut_stream, reply, upstream_error
from tests.helpers.node import NodeEnv, run_node

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("stream", [False, True])
async def test_text(node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream, stream: bool) -> None:
    upstream.push(reply("responses", stream, text="It is sunny"))
    result = await run_node("agents_run", gate.url, args={"stream": stream})
    assert result["final_output"] == "It is sunny" and result["executed"] == []
    assert upstream.requests[0].path == "/v1/responses"
    if stream:
        assert result["text_deltas"] == 3  # one per word: the stream arrived as a stream


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("calls", [(WEATHER,), (SHELL, WEATHER)], ids=["alone", "after-a-denied-one"])
async def test_an_allowed_tool_runs_with_its_arguments(
    node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream, stream: bool, calls: tuple[tuple[str, str, str], ...]
) -> None:
    upstream.push(reply("responses", stream, calls=calls), reply("responses", stream, text="Sunny in Paris"))
    result = await run_node("agents_run", gate.url, args={"stream": stream})
    assert result["executed"] == [{"name": "get_weather", "arguments": arguments(WEATHER)}]
    assert result["final_output"] == "Sunny in Paris"
    call = next(i["raw"] for i in result["items"] if i["type"] == "tool_call_item")
    assert (call["callId"], call["name"], call["arguments"]) == WEATHER
    outputs = [i for i in upstream.requests[1].body["input"] if i.get("type") == "function_call_output"]
    assert [o["call_id"] for o in outputs] == [WEATHER[0]]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_denied_tool_never_runs(node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream, stream: bool) -> None:
    upstream.push(reply("responses", stream, calls=(SHELL,)), reply("responses", stream, text="unreachable"))
    result = await run_node("agents_run", gate.url, args={"stream": stream})
    assert result["executed"] == []
    assert "run_shell denied by policy" in result["final_output"]
    assert "rm -rf" not in str(result["items"])
    assert len(upstream.requests) == 1
    assert [t["name"] for t in upstream.requests[0].body["tools"]] == ["get_weather"]


@pytest.mark.parametrize("stream", [False, True])
async def test_previous_response_id_chains_past_a_stripped_call(
    node_env: NodeEnv, stateful_gate: Celgate, stateful_upstream: FakeUpstream, stream: bool
) -> None:
    """On a server-kept conversation each turn sends only its new items; the API wants an output for every call
    of the stored response, so celgate answers the one it stripped."""
    upstream = stateful_upstream
    upstream.push(
        reply("responses", False, text="Hi"),
        reply("responses", stream, calls=(SHELL, WEATHER)),
        reply("responses", stream, text="Sunny in Paris"),
    )
    result = await run_node("agents_run", stateful_gate.url, args={"stream": stream, "chain": True})
    assert result["final_output"] == "Sunny in Paris"
    assert result["executed"] == [{"name": "get_weather", "arguments": arguments(WEATHER)}]
    *_, follow_up = (r.body for r in upstream.requests if r.method == "POST")
    assert upstream.store is not None and follow_up["previous_response_id"] in upstream.store.responses
    outputs = {i["call_id"]: i["output"] for i in follow_up["input"] if i.get("type") == "function_call_output"}
    assert outputs[WEATHER[0]] == "sunny" and "run_shell denied by policy" in outputs[SHELL[0]]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_policy_denial_is_permission_denied(
    node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream, stream: bool
) -> None:
    result = await run_node("agents_run", gate.url, args={"stream": stream, "model": DENIED_MODEL}, expect_error=True)
    error = result["error"]
    assert (error["name"], error["status"], error["code"]) == ("PermissionDeniedError", 403, "policy_denied")
    assert "this model is not for this app" in error["message"]
    assert upstream.requests == []


async def test_an_upstream_rate_limit_is_rate_limit_error(
    node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream
) -> None:
    upstream.push(upstream_error(429))
    result = await run_node("agents_run", gate.url, expect_error=True)
    assert (result["error"]["name"], result["error"]["status"]) == ("RateLimitError", 429)


async def test_a_cut_stream_raises(node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream) -> None:
    upstream.push(cut_stream("responses"))
    result = await run_node("agents_run", gate.url, args={"stream": True}, expect_error=True)
    assert "cut" in result["error"]["message"], result["error"]


async def test_models(node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream) -> None:
    result = await run_node("models_list", gate.url)
    assert result["ids"] == [MODEL]
    assert [(r.method, r.path) for r in upstream.requests] == [("GET", "/v1/models")]
