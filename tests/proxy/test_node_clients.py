"""Node clients through celgate: the openai npm client (chat stream helper, runTools, Responses) and the Vercel AI SDK.

Skipped (with the reason) only when node/npm are missing; the packages install
once into a cached directory (tests/helpers/node.py).
"""

from __future__ import annotations

import pytest

from tests.helpers import ALLOW_PARIS_WEATHER, Celgate
from tests.helpers import responses_wire as rw
from tests.helpers.fakeupstream import FakeUpstream, Script, text_stream, tool_call_stream
from tests.helpers.node import NodeEnv, run_node

pytestmark = pytest.mark.timeout(240)

POLICY = ALLOW_PARIS_WEATHER
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
ROME = ("call_r", "get_weather", '{"city":"Rome"}')
PARIS = ("call_p", "get_weather", '{"city":"Paris"}')


async def test_chat_stream_helper_survives_a_stripped_first_call(
    node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream
) -> None:
    """The first delta carries the role; stripping the call it rode in must keep it ("missing role for choice 0")."""
    upstream.push(Script(steps=tool_call_stream([ROME, PARIS])))
    result = await run_node("chat_stream", gate.url, args={"tools": [WEATHER_TOOL]})
    assert [(c["name"], c["arguments"]) for c in result["tool_calls"]] == [("get_weather", '{"city":"Paris"}')]
    assert [d["index"] for d in result["arguments_done"]] == [0]


async def test_chat_stream_helper_when_every_call_is_denied(
    node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream
) -> None:
    upstream.push(Script(steps=tool_call_stream([ROME])))
    result = await run_node("chat_stream", gate.url, args={"tools": [WEATHER_TOOL]})
    assert result["tool_calls"] == [] and result["finish_reason"] == "stop"
    assert "denied by policy" in result["content"]


@pytest.mark.parametrize(("call", "ran"), [(PARIS, True), (ROME, False)])
async def test_run_tools_with_streaming_runs_only_allowed_tools(
    node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream, call: tuple[str, str, str], ran: bool
) -> None:
    upstream.push(Script(steps=tool_call_stream([call])), Script(steps=text_stream(["It is", " sunny"])))
    result = await run_node("chat_run_tools", gate.url)
    assert bool(result["executed"]) is ran
    if not ran:
        assert "denied by policy" in result["content"] and result["completions"] == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_create_never_shows_a_denied_call(
    node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream, stream: bool
) -> None:
    output = [rw.function_call_item(*ROME), rw.message_item("between"), rw.function_call_item(*PARIS)]
    upstream.push(Script(steps=rw.responses_steps(output)) if stream else Script(json=rw.response_object(output)))
    result = await run_node("responses_create", gate.url, args={"input": "weather", "stream": stream})
    names = [(i["type"], i.get("arguments")) for i in result["response"]["output"]]
    assert names == [("message", None), ("function_call", '{"city":"Paris"}')]
    if stream:
        assert "Rome" not in str(result["events"])


async def test_responses_stream_helper_accepts_the_filtered_stream(
    node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream
) -> None:
    upstream.push(Script(steps=rw.responses_steps([rw.function_call_item(*ROME), rw.message_item("ok")])))
    result = await run_node("responses_stream", gate.url, args={"input": "weather"})
    assert [i["type"] for i in result["response"]["output"]] == ["message", "message"]  # the deny text is the second
    assert result["output_text"].startswith("ok") and "denied by policy" in result["output_text"]


@pytest.mark.parametrize("mode", ["generate", "stream"])
@pytest.mark.parametrize(("call", "ran"), [(PARIS, True), (ROME, False)])
async def test_the_ai_sdk_default_provider_runs_only_allowed_tools(
    node_env: NodeEnv, gate: Celgate, upstream: FakeUpstream, mode: str, call: tuple[str, str, str], ran: bool
) -> None:
    item = rw.function_call_item(*call)
    upstream.push(
        Script(steps=rw.responses_steps([item])) if mode == "stream" else Script(json=rw.response_object([item]))
    )
    result = await run_node("ai_sdk", gate.url, args={"mode": mode})
    assert result["provider"] == "openai.responses"
    assert bool(result["executed"]) is ran
    assert upstream.requests[0].path == "/v1/responses"
