"""What every client interop test shares: one policy, one allowed and one denied tool, scripted replies.

Each file in ``tests/interop/`` drives one real client (LiteLLM, LangChain,
pydantic-ai, the JS Agents SDK, curl) through celgate to the fake upstream, in
the same scenarios: plain and streamed text, an allowed tool call that must
arrive intact, a denied one that must never reach the client (or run there),
a policy denial and an upstream error that must surface as the client's own
error type, and the model list. The policy is fixed so the scenarios mean the
same thing for every client:

* every model may be used except ``forbidden-*`` (a 403 ``policy_denied``);
* ``get_weather`` may be called; ``run_shell`` is denied (no rule allows it,
  so celgate also removes it from the tools a request offers) and its call is
  stripped; a ``delete_repo`` call fails the whole response (``action: error``).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from tests.helpers import ALLOW_REQUESTS
from tests.helpers import responses_wire as rw
from tests.helpers.fakeupstream import Script, Step, completion, text_stream, tool_call_stream

__all__ = [
    "CHAT_TOOLS",
    "DELETE",
    "DENIED_MODEL",
    "MODEL",
    "POLICY",
    "RESPONSES_TOOLS",
    "SHELL",
    "WEATHER",
    "Api",
    "arguments",
    "cut_stream",
    "reply",
    "upstream_error",
]

Api = Literal["chat", "responses"]

MODEL = "fake-model"
DENIED_MODEL = "forbidden-model"
POLICY = (
    ALLOW_REQUESTS
    + """\
  - name: no-forbidden-models
    on: request
    models: ["forbidden-*"]
    effect: deny
    reason: this model is not for this app
  - name: weather
    on: tool_call
    tools: ["get_weather"]
    effect: allow
  - name: never-delete
    on: tool_call
    tools: ["delete_repo"]
    effect: deny
    action: error
    reason: repositories are not deleted from here
"""
)
WEATHER = ("call_weather", "get_weather", '{"city":"Paris"}')
"""An allowed call ``(id, name, arguments)``: it must reach the client byte for byte."""
SHELL = ("call_shell", "run_shell", '{"command":"rm -rf /"}')
"""A denied call: it must never reach the client, and a client's tool body must never run."""
DELETE = ("call_delete", "delete_repo", '{"repo":"celgate"}')
"""A call whose rule fails the whole response: a 403, or an in-band error event once a stream has started."""
CHAT_TOOLS = [
    {
        "type": "function",
        "function": {"name": name, "parameters": {"type": "object", "properties": {arg: {"type": "string"}}}},
    }
    for name, arg in (("get_weather", "city"), ("run_shell", "command"))
]
"""Both tools as a chat completions request offers them (celgate passes only ``get_weather`` upstream)."""
RESPONSES_TOOLS = [{"type": "function", **tool["function"]} for tool in CHAT_TOOLS]
"""Both tools as a Responses request offers them."""


def reply(api: Api, stream: bool, *, text: str | None = None, calls: tuple[tuple[str, str, str], ...] = ()) -> Script:
    """The upstream's answer in ``api``'s wire format: ``text`` (split into words when streamed), then ``calls``."""
    if api == "chat":
        if calls:
            return Script(steps=tool_call_stream(list(calls))) if stream else Script(json=completion(None, list(calls)))
        words = (text or "").split(" ")
        return (
            Script(steps=text_stream([w if i == 0 else f" {w}" for i, w in enumerate(words)]))
            if stream
            else (Script(json=completion(text)))
        )
    output = ([rw.message_item(text)] if text is not None else []) + [rw.function_call_item(*c) for c in calls]
    return (
        Script(steps=rw.responses_steps(output, model=MODEL))
        if stream
        else (Script(json=rw.response_object(output, model=MODEL)))
    )


def cut_stream(api: Api) -> Script:
    """A stream the upstream breaks off (TCP reset) after some text: celgate ends it with an in-band error event.

    A client must raise, never take the text so far for the whole answer.
    """
    steps = reply(api, True, text="It is sunny in Paris").steps
    assert steps is not None
    return Script(steps=[*steps[:-4], Step(reset=True)])  # before the finish: no stop, no completed event


def upstream_error(status: int = 429, message: str = "Rate limit reached for requests") -> Script:
    """An upstream error as the OpenAI API sends it: the status, its JSON error body and its ``Retry-After``."""
    kind = "requests" if status == 429 else "invalid_request_error"
    code = "rate_limit_exceeded" if status == 429 else None
    body: dict[str, Any] = rw.openai_error(message, type=kind, code=code)
    return Script(status=status, json=body, headers={"Retry-After": "0"})


def arguments(call: tuple[str, str, str]) -> dict[str, Any]:
    """A call's arguments as the parsed object clients hand to tool functions."""
    parsed: dict[str, Any] = json.loads(call[2])
    return parsed
