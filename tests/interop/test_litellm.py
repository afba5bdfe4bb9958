"""LiteLLM through celgate: ``completion``/``acompletion`` and ``aresponses`` with the ``openai/`` provider.

LiteLLM re-parses every reply into its own ``ModelResponse`` and maps HTTP
errors onto its own exception classes; both must hold for what celgate sends.
"""

from __future__ import annotations

import asyncio
from typing import Any

import litellm
import pytest

from tests.helpers import Celgate
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

pytestmark = [
    pytest.mark.timeout(60),
    # LiteLLM's own types warn under this pydantic (ReadOnly TypedDict items, its usage model): not celgate's output.
    pytest.mark.filterwarnings("ignore:.*ReadOnly.*:UserWarning", "ignore:Pydantic serializer warnings:UserWarning"),
]

MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]


# A model LiteLLM knows: for others ``aresponses(stream=True)`` asks for a whole response and fakes the stream.
KNOWN_MODEL = "gpt-4o-mini"


def options(gate: Celgate, model: str = KNOWN_MODEL) -> dict[str, Any]:
    """What an app passes LiteLLM to reach an OpenAI-compatible base URL, without retries."""
    return {"model": f"openai/{model}", "api_base": gate.url, "api_key": "sk-test", "num_retries": 0, "max_retries": 0}


async def chat(gate: Celgate, stream: bool, **kwargs: Any) -> Any:
    """``acompletion``, a stream reassembled with ``stream_chunk_builder`` as LiteLLM apps do."""
    response = await litellm.acompletion(**options(gate), messages=MESSAGES, stream=stream, **kwargs)
    if not stream:
        return response
    chunks = [chunk async for chunk in response]
    return litellm.stream_chunk_builder(chunks, messages=MESSAGES)


@pytest.mark.parametrize("stream", [False, True])
async def test_text(gate: Celgate, upstream: FakeUpstream, stream: bool) -> None:
    upstream.push(reply("chat", stream, text="It is sunny"))
    response = await chat(gate, stream)
    assert response.choices[0].message.content == "It is sunny"
    assert response.choices[0].finish_reason == "stop"
    assert upstream.requests[0].body.get("stream", False) is stream


async def test_sync_completion(gate: Celgate, upstream: FakeUpstream) -> None:
    upstream.push(reply("chat", False, text="It is sunny"))
    response = await asyncio.to_thread(litellm.completion, **options(gate), messages=MESSAGES)
    assert response.choices[0].message.content == "It is sunny"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("calls", [(WEATHER,), (SHELL, WEATHER)], ids=["alone", "after-a-denied-one"])
async def test_an_allowed_tool_call_arrives_intact(
    gate: Celgate, upstream: FakeUpstream, stream: bool, calls: tuple[tuple[str, str, str], ...]
) -> None:
    upstream.push(reply("chat", stream, calls=calls))
    response = await chat(gate, stream, tools=CHAT_TOOLS)
    calls = response.choices[0].message.tool_calls
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [WEATHER]
    assert response.choices[0].finish_reason == "tool_calls"
    assert [t["function"]["name"] for t in upstream.requests[0].body["tools"]] == ["get_weather"]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_denied_tool_call_never_arrives(gate: Celgate, upstream: FakeUpstream, stream: bool) -> None:
    upstream.push(reply("chat", stream, calls=(SHELL,)))
    response = await chat(gate, stream, tools=CHAT_TOOLS)
    message = response.choices[0].message
    assert not message.tool_calls
    assert "run_shell denied by policy" in message.content
    assert "rm -rf" not in str(response.model_dump())


@pytest.mark.parametrize("stream", [False, True])
async def test_a_policy_denial_is_an_api_error_403(gate: Celgate, upstream: FakeUpstream, stream: bool) -> None:
    """LiteLLM's OpenAI provider maps no 403 to ``PermissionDeniedError`` (a real OpenAI 403 neither): ``APIError``."""
    with pytest.raises(litellm.APIError) as raised:
        response = await litellm.acompletion(**options(gate, DENIED_MODEL), messages=MESSAGES, stream=stream)
        async for _ in response:
            pass
    assert raised.value.status_code == 403
    assert "this model is not for this app" in str(raised.value)
    assert upstream.requests == []


@pytest.mark.parametrize("stream", [False, True])
async def test_a_call_that_fails_the_response_raises(gate: Celgate, upstream: FakeUpstream, stream: bool) -> None:
    """``action: error``: a 403 before a stream starts, an in-band error event after (LiteLLM: a mid-stream error)."""
    upstream.push(reply("chat", stream, calls=(DELETE,)))
    expected = litellm.exceptions.MidStreamFallbackError if stream else litellm.APIError
    with pytest.raises(expected, match="never-delete"):
        await chat(gate, stream, tools=CHAT_TOOLS)


async def test_an_upstream_rate_limit_is_rate_limit_error(gate: Celgate, upstream: FakeUpstream) -> None:
    upstream.push(upstream_error(429))
    with pytest.raises(litellm.RateLimitError) as raised:
        await litellm.acompletion(**options(gate), messages=MESSAGES)
    assert raised.value.status_code == 429


async def test_a_cut_stream_raises(gate: Celgate, upstream: FakeUpstream) -> None:
    """LiteLLM wraps mid-stream errors in ``MidStreamFallbackError`` (a ``ServiceUnavailableError``) for its router."""
    upstream.push(cut_stream("chat"))
    with pytest.raises(litellm.exceptions.MidStreamFallbackError, match="cut"):
        await chat(gate, True)


async def test_a_cut_responses_stream_raises(gate: Celgate, upstream: FakeUpstream) -> None:
    upstream.push(cut_stream("responses"))
    with pytest.raises(litellm.exceptions.MidStreamFallbackError, match="cut"):
        response = await litellm.aresponses(**options(gate), input="Hi", stream=True)
        async for _ in response:
            pass


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("calls", "text"),
    [((), "It is sunny"), ((WEATHER,), None), ((SHELL, WEATHER), None), ((SHELL,), None)],
    ids=["text", "allowed", "mixed", "denied"],
)
async def test_responses(
    gate: Celgate, upstream: FakeUpstream, stream: bool, calls: tuple[tuple[str, str, str], ...], text: str | None
) -> None:
    api: Api = "responses"
    upstream.push(reply(api, stream, text=text, calls=calls))
    response = await litellm.aresponses(
        **options(gate), input="What is the weather in Paris?", tools=RESPONSES_TOOLS, stream=stream
    )
    if stream:
        events = [event async for event in response]
        assert upstream.requests[0].body["stream"] is True
        assert events[-1].type == "response.completed"
        if text is not None:
            deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
            assert "".join(deltas) == text
        response = events[-1].response
    items = [(i.type, getattr(i, "name", None), getattr(i, "arguments", None)) for i in response.output]
    if WEATHER in calls:
        assert items[-1] == ("function_call", "get_weather", WEATHER[2])
        assert "run_shell" not in str(items)
    else:
        assert [kind for kind, _, _ in items] == ["message"]
        said = response.output[0].content[0].text
        assert said == text if text else "run_shell denied by policy" in said
    assert [t["name"] for t in upstream.requests[0].body["tools"]] == ["get_weather"]


async def test_models(gate: Celgate, upstream: FakeUpstream) -> None:
    found = await asyncio.to_thread(
        litellm.get_valid_models,
        check_provider_endpoint=True,
        custom_llm_provider="openai",
        api_base=gate.url,
        api_key="sk-test",
    )
    assert found == [MODEL]  # the upstream's list, through celgate
    assert [(r.method, r.path) for r in upstream.requests] == [("GET", "/v1/models")]
