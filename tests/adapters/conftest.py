"""Fixtures for adapter tests: a scripted fake gateway, fake proxy hooks, drop-in folders.

The fake gateway stands in for celgate's own ``/v1/chat/completions`` (where
agents send their model calls): it records every request and answers from a
script of steps, as JSON or as an SSE stream depending on the request.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from celgate import policy
from celgate.adapters import AgentRegistry, AgentSettings, CallerContext, ToolExecution
from tests.helpers.dropins import sdk_environment, write_agent  # noqa: F401  (autouse here)

USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


@dataclass
class Text:
    """The model answers with text; streamed as ``pieces`` (default: one per word)."""

    content: str
    pieces: list[str] | None = None
    hold_after_first: asyncio.Event | None = None  # stream pauses after the first piece until set


@dataclass
class ToolCalls:
    """The model calls tools: ``(call_id, name, arguments_json)`` each."""

    calls: list[tuple[str, str, str]]
    hold: asyncio.Event | None = None  # the reply waits until set


@dataclass
class Error:
    status: int
    message: str
    type: str = "permission_error"
    code: str = "policy_denied"


@dataclass
class InBandError:
    """A streamed reply cut by an SSE ``error`` event; celgate's own carry ``status``, relayed ones don't."""

    status: int | None
    message: str
    type: str = "policy_denied"
    code: str = "policy_denied"


@dataclass
class Recorded:
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class FakeGateway:
    url: str = ""
    script: deque[Any] = field(default_factory=deque)
    requests: list[Recorded] = field(default_factory=list)

    def reply(self, *steps: Any) -> None:
        self.script.extend(steps)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Recorded(body, {k.lower(): v for k, v in request.headers.items()}))
        step = self.script.popleft() if self.script else Error(500, "script exhausted", "test", "x")
        if isinstance(step, ToolCalls) and step.hold is not None:
            await step.hold.wait()
        if isinstance(step, Error):
            error = {"message": step.message, "type": step.type, "param": None, "code": step.code}
            return web.json_response({"error": error}, status=step.status)
        if body.get("stream"):
            return await self._stream(request, body, step)
        return web.json_response(_completion(body["model"], step))

    async def _stream(self, request: web.Request, body: dict[str, Any], step: Any) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(payload: Any) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            await response.write(f"data: {data}\n\n".encode())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        await send(chunk({"role": "assistant", "content": ""}))
        if isinstance(step, InBandError):
            error = {"message": step.message, "type": step.type, "param": None, "code": step.code}
            if step.status is not None:
                error["status"] = step.status
            await response.write(f"event: error\ndata: {json.dumps({'error': error})}\n\n".encode())
            return response
        if isinstance(step, Text):
            pieces = step.pieces or [w + " " for w in step.content.split(" ")]
            for index, piece in enumerate(pieces):
                await send(chunk({"content": piece}))
                if index == 0 and step.hold_after_first is not None:
                    await step.hold_after_first.wait()
            await send(chunk({}, "stop"))
        else:
            for index, (call_id, name, arguments) in enumerate(step.calls):
                first = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
                await send(chunk({"tool_calls": [first]}))
                await send(chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}))
            await send(chunk({}, "tool_calls"))
        if (body.get("stream_options") or {}).get("include_usage"):
            await send({**chunk({}), "choices": [], "usage": USAGE})
        await send("[DONE]")
        return response


def _completion(model: str, step: Any) -> dict[str, Any]:
    if isinstance(step, Text):
        message: dict[str, Any] = {"role": "assistant", "content": step.content}
        finish = "stop"
    else:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in step.calls
            ],
        }
        finish = "tool_calls"
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": USAGE,
    }


class FakeHooks:
    """Stands in for the proxy: denies the tools named in ``deny``, records everything."""

    def __init__(self, deny: tuple[str, ...] = ()) -> None:
        self.deny = set(deny)
        self.checked: list[policy.ToolCall] = []
        self.finished: list[tuple[str, bool]] = []
        self.executed: list[ToolExecution] = []
        self.load_failures: list[tuple[str, str]] = []
        self.tool_load_failures: list[tuple[str, str]] = []

    def check_tool(self, caller: CallerContext, tool: policy.ToolCall) -> policy.Decision:
        self.checked.append(tool)
        denied = tool.name in self.deny
        return policy.Decision(
            point=policy.Point.TOOL_CALL,
            effect=policy.Effect.DENY if denied else policy.Effect.ALLOW,
            mode=policy.Mode.ENFORCE,
            rule=f"no-{tool.name}" if denied else None,
            reason="test",
            action=policy.Action.ERROR,
            matched=(),
            errors=(),
            eval_seconds=0.0,
            subject=tool.name,
            message=f"celgate: {tool.name} denied by policy (no-{tool.name}): test",
        )

    def tool_finished(self, tool_name: str, seconds: float, failed: bool) -> None:
        self.finished.append((tool_name, failed))

    def tool_executed(self, caller: CallerContext, execution: ToolExecution) -> None:
        self.executed.append(execution)

    def load_failed(self, agent: str, kind: str) -> None:
        self.load_failures.append((agent, kind))

    def tool_load_failed(self, tool: str, kind: str) -> None:
        self.tool_load_failures.append((tool, kind))


@pytest.fixture
async def gateway(aiohttp_server: Any) -> FakeGateway:
    fake = FakeGateway()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    server = await aiohttp_server(app)
    fake.url = str(server.make_url("/v1"))
    return fake


@pytest.fixture
def hooks() -> FakeHooks:
    return FakeHooks()


@pytest.fixture
async def make_registry(gateway: FakeGateway, hooks: FakeHooks) -> AsyncIterator[Callable[..., Any]]:
    """``await make_registry(directory, **settings)`` -> a started registry, closed at teardown."""
    registries: list[AgentRegistry] = []

    async def make(directory: Path, **overrides: Any) -> AgentRegistry:
        settings = {"directory": directory, "default_model": "test-model", "gateway_url": gateway.url}
        registry = AgentRegistry(AgentSettings(**{**settings, **overrides}), hooks)
        await registry.start()
        registries.append(registry)
        return registry

    yield make
    for registry in registries:
        await registry.close()


def caller_for(gateway: FakeGateway, agent: str, authorization: str | None = "Bearer sk-alice") -> CallerContext:
    request = policy.RequestInfo(
        model=agent,
        agent=agent,
        stream=False,
        path="/v1/chat/completions",
        headers={},
        tools=(),
        scalars={},
    )
    return CallerContext(
        principal=policy.Principal("alice", {}),
        request=request,
        request_id="req-123",
        authorization=authorization,
        gateway_url=gateway.url,
        internal_token="internal-token",
    )


async def collect(stream: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [chunk async for chunk in stream]


# --- drop-ins both APIs' runner tests use -------------------------------------------------------------

TOOLS_AGENT = """
import asyncio
from agents import Agent, function_tool

RAN = []

@function_tool
def safe(x: int) -> str:
    \"\"\"A harmless tool.\"\"\"
    RAN.append(("safe", x))
    return f"safe {x}"

@function_tool
def danger(x: int) -> str:
    \"\"\"A tool the policy denies.\"\"\"
    RAN.append(("danger", x))
    return "boom"

@function_tool
def broken() -> str:
    \"\"\"Always raises.\"\"\"
    raise RuntimeError("kaput")

@function_tool
async def slow() -> str:
    \"\"\"Finishes after a while.\"\"\"
    await asyncio.sleep(0.3)
    RAN.append(("slow", 0))
    return "slow done"

agent = Agent(name="Tools", instructions="Use tools.", tools=[safe, danger, broken, slow])
"""


WORKFLOW = """
from agents import Agent, RunConfig, Runner, function_tool, trace
from openai import AsyncOpenAI
from pydantic import BaseModel

client = AsyncOpenAI()

class Route(BaseModel):
    department: str

@function_tool
def get_invoice(invoice_id: str) -> str:
    \"\"\"Look up an invoice.\"\"\"
    return f"{invoice_id}: paid"

classifier = Agent(name="Classifier", instructions="Classify.", output_type=Route)
billing = Agent(name="Billing", instructions="Invoices.", tools=[get_invoice])
triage = Agent(name="Triage", instructions="Route.", handoffs=[billing])

class WorkflowInput(BaseModel):
    input_as_text: str

async def run_workflow(workflow_input: WorkflowInput):
    with trace("wf"):
        text = workflow_input.input_as_text
        route = await Runner.run(classifier, input=text, run_config=RunConfig(workflow_name="x"))
        result = await Runner.run(triage, input=[{"role": "user", "content": text}])
        return {"output_text": route.final_output.department + ": " + result.final_output_as(str)}
"""


# An Agent Builder export whose output is structured: sent once, at the end.
STRUCTURED_WORKFLOW = """
from pydantic import BaseModel

class Answer(BaseModel):
    value: int

class WorkflowInput(BaseModel):
    input_as_text: str

async def run_workflow(workflow_input: WorkflowInput):
    return Answer(value=len(workflow_input.input_as_text))
"""


@pytest.fixture
async def tools(tmp_path: Path, make_registry: Any) -> AgentRegistry:
    write_agent(tmp_path, "Tools", TOOLS_AGENT)
    return await make_registry(tmp_path)
