"""Gateway tools (``--tools``) and declarative agents (``agent.yaml``) on the drop-in runtime.

The scripted gateway stands in for celgate's ``/v1/chat/completions``: it
records what each model call carried (tool schemas, ``tool_choice``,
``parallel_tool_calls``, earlier tool results) and answers with tool calls,
then text. HTTP tools call a real aiohttp server on loopback.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from celgate.adapters import AgentRegistry, AgentRunError, run_completion, stream_completion

from .conftest import FakeGateway, FakeHooks, Text, ToolCalls, caller_for, collect, write_agent

ORDERS_PY = """
from pathlib import Path

from agents import function_tool

RAN = Path(__file__).with_name("ran.log")


@function_tool
def lookup_order(order_id: str) -> str:
    \"\"\"Look up an order by its id.\"\"\"
    with RAN.open("a") as log:
        log.write(f"lookup_order {order_id}\\n")
    return f"{order_id}: shipped"


@function_tool
def cancel_order(order_id: str) -> str:
    \"\"\"Cancel an order.\"\"\"
    with RAN.open("a") as log:
        log.write(f"cancel_order {order_id}\\n")
    return f"{order_id}: cancelled"
"""

PLAIN_PY = """
def add(a: int, b: int) -> int:
    \"\"\"Add two integers.\"\"\"
    return a + b


__tools__ = [add]
"""

FLAKY_PY = """
from agents import function_tool


@function_tool
def flaky() -> str:
    \"\"\"Always fails.\"\"\"
    raise ConnectionError("backend down")
"""

ORDERS_AGENT = """
description: Answers order questions.
instructions: You answer questions about orders.
tools: [lookup_order, "cancel_*"]
tool_choice: required
parallel_tool_calls: false
max_turns: 4
"""


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def declare(agents: Path, name: str, text: str) -> Path:
    return write(agents / name, "agent.yaml", text)


def ran(tools: Path) -> list[str]:
    log = tools / "ran.log"
    return log.read_text().splitlines() if log.exists() else []


def tool_messages(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "tool"]


Start = Callable[..., Awaitable[AgentRegistry]]


@pytest.fixture
def start(tmp_path: Path, make_registry: Any) -> Start:
    """``await start()`` -> a registry over tmp_path/agents with tmp_path/tools as its catalogue."""

    async def make(**settings: Any) -> AgentRegistry:
        (tmp_path / "agents").mkdir(exist_ok=True)
        (tmp_path / "tools").mkdir(exist_ok=True)
        registry: AgentRegistry = await make_registry(tmp_path / "agents", tools=tmp_path / "tools", **settings)
        return registry

    return make


async def ask(registry: AgentRegistry, gateway: FakeGateway, agent: str, text: str = "Where is order 7?") -> str:
    loaded = registry.get(agent)
    assert loaded is not None, registry.failures()
    body = {"messages": [{"role": "user", "content": text}]}
    result = await run_completion(loaded, body, caller_for(gateway, agent))
    content: str = result["choices"][0]["message"]["content"]
    return content


# --- the upstream request carries the tools, tool_choice and parallel_tool_calls ----------------------


async def test_a_declarative_agent_offers_its_tools_and_runs_python_tools(
    tmp_path: Path, start: Start, gateway: FakeGateway, hooks: FakeHooks
) -> None:
    write(tmp_path / "tools", "orders.py", ORDERS_PY)
    write(tmp_path / "tools", "plain.py", PLAIN_PY)
    declare(tmp_path / "agents", "Orders", ORDERS_AGENT.replace('"cancel_*"]', '"cancel_*", add]'))
    registry = await start()
    gateway.reply(
        ToolCalls([("c1", "lookup_order", '{"order_id": "7"}'), ("c2", "add", '{"a": 2, "b": 3}')]),
        Text("Order 7 has shipped."),
    )

    assert await ask(registry, gateway, "Orders") == "Order 7 has shipped."

    first, second = (r.body for r in gateway.requests)
    assert first["messages"][0] == {"role": "system", "content": "You answer questions about orders."}
    offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert sorted(offered) == ["add", "cancel_order", "lookup_order"]  # names and the glob, once each
    assert offered["lookup_order"]["description"] == "Look up an order by its id."
    assert offered["add"]["parameters"]["properties"] == {
        "a": {"title": "A", "type": "integer"},
        "b": {"title": "B", "type": "integer"},
    }
    assert first["tool_choice"] == "required"
    assert first["parallel_tool_calls"] is False
    assert tool_messages(second) == ["7: shipped", "5"]
    assert ran(tmp_path / "tools") == ["lookup_order 7"]
    checked = [(c.name, c.source, c.server) for c in hooks.checked]
    assert checked == [("lookup_order", "gateway", ""), ("add", "gateway", "")]
    [add, lookup] = sorted(hooks.executed, key=lambda record: record.tool)  # parallel: any order
    assert (add.tool, add.result_bytes) == ("add", 1)
    assert (lookup.agent, lookup.tool, lookup.source, lookup.outcome) == ("Orders", "lookup_order", "gateway", "ok")
    assert lookup.origin == str((tmp_path / "tools" / "orders.py").resolve())
    assert (lookup.call_id, lookup.result_bytes) == ("c1", len("7: shipped"))
    listed = {a["name"]: a for a in registry.agents()}["Orders"]
    assert (listed["kind"], listed["tools"], listed["max_turns"]) == (
        "declarative",
        ["lookup_order", "cancel_order", "add"],
        4,
    )
    assert listed["description"] == "Answers order questions."


async def test_a_denied_gateway_tool_is_not_executed_and_the_model_is_told(
    tmp_path: Path, start: Start, gateway: FakeGateway, hooks: FakeHooks
) -> None:
    write(tmp_path / "tools", "orders.py", ORDERS_PY)
    declare(tmp_path / "agents", "Orders", ORDERS_AGENT)
    registry = await start()
    hooks.deny.add("cancel_order")
    gateway.reply(ToolCalls([("c1", "cancel_order", '{"order_id": "7"}')]), Text("I may not cancel it."))

    assert await ask(registry, gateway, "Orders", "Cancel order 7") == "I may not cancel it."

    assert ran(tmp_path / "tools") == []
    assert tool_messages(gateway.requests[1].body) == ["celgate: cancel_order denied by policy (no-cancel_order): test"]
    assert hooks.executed == []


async def test_max_turns_ends_the_run_with_a_clear_error(tmp_path: Path, start: Start, gateway: FakeGateway) -> None:
    write(tmp_path / "tools", "orders.py", ORDERS_PY)
    declare(tmp_path / "agents", "Orders", ORDERS_AGENT.replace("max_turns: 4", "max_turns: 2"))
    registry = await start()
    gateway.reply(*(ToolCalls([(f"c{i}", "lookup_order", '{"order_id": "7"}')]) for i in range(3)))

    with pytest.raises(AgentRunError) as caught:
        await ask(registry, gateway, "Orders")
    assert (caught.value.status, caught.value.code) == (500, "max_turns_exceeded")
    assert "max_turns=2" in caught.value.message
    assert len(gateway.requests) == 2


async def test_a_streaming_run_shows_gateway_tool_activity_and_the_final_text(
    tmp_path: Path, start: Start, gateway: FakeGateway
) -> None:
    write(tmp_path / "tools", "orders.py", ORDERS_PY)
    declare(tmp_path / "agents", "Orders", ORDERS_AGENT)
    registry = await start()
    gateway.reply(ToolCalls([("c1", "lookup_order", '{"order_id": "7"}')]), Text("It shipped."))
    loaded = registry.get("Orders")
    assert loaded is not None
    body = {"messages": [{"role": "user", "content": "Order 7?"}], "stream": True}

    chunks = await collect(stream_completion(loaded, body, caller_for(gateway, "Orders")))

    events = [c["celgate"] for c in chunks if "celgate" in c]
    assert events == [
        {"type": "tool_call", "id": "c1", "name": "lookup_order", "arguments": '{"order_id": "7"}', "agent": "Orders"},
        {"type": "tool_result", "id": "c1", "name": "lookup_order", "output": "7: shipped", "agent": "Orders"},
    ]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "It shipped. "


# --- HTTP tools ---------------------------------------------------------------------------------------


class Endpoint:
    """A local HTTP service for HTTP tools: records requests, answers as the test says."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.answer: Callable[[web.Request], Awaitable[web.StreamResponse]] = self.ok
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else dict(request.query)
        self.requests.append((request.method, dict(request.headers), body))
        return await self.answer(request)

    async def ok(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text='{"status": "in transit"}', content_type="application/json")


@pytest.fixture
async def endpoint(aiohttp_server: Any) -> Endpoint:
    service = Endpoint()
    app = web.Application()
    app.router.add_route("*", "/status", service.handle)
    server = await aiohttp_server(app)
    service.url = str(server.make_url("/status"))
    return service


def http_tool(url: str, **extra: Any) -> str:
    fields = {
        "kind": "http",
        "name": "order_status",
        "description": "The shipping status of an order.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
        "url": url,
        "headers": {"Authorization": "Bearer ${ORDERS_TOKEN}"},
        **extra,
    }
    return json.dumps(fields)  # JSON is YAML


STATUS_AGENT = """
instructions: You track orders.
tools: [order_status]
"""


async def test_an_http_tool_posts_the_arguments_and_returns_the_body(
    tmp_path: Path,
    start: Start,
    gateway: FakeGateway,
    hooks: FakeHooks,
    endpoint: Endpoint,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDERS_TOKEN", "tok-123")
    write(tmp_path / "tools", "status.yaml", http_tool(endpoint.url))
    declare(tmp_path / "agents", "Tracker", STATUS_AGENT)
    registry = await start()
    gateway.reply(ToolCalls([("c1", "order_status", '{"order_id": "7"}')]), Text("In transit."))

    assert await ask(registry, gateway, "Tracker") == "In transit."

    [(method, headers, body)] = endpoint.requests
    assert (method, headers["Authorization"], body) == ("POST", "Bearer tok-123", {"order_id": "7"})
    assert tool_messages(gateway.requests[1].body) == ['{"status": "in transit"}']
    [execution] = hooks.executed
    assert (execution.origin, execution.outcome, execution.result_bytes) == (endpoint.url, "ok", 24)
    assert gateway.requests[0].body["tools"][0]["function"]["parameters"]["required"] == ["order_id"]


async def test_a_get_tool_sends_the_arguments_as_the_query(
    tmp_path: Path, start: Start, gateway: FakeGateway, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERS_TOKEN", "tok")
    write(tmp_path / "tools", "status.yaml", http_tool(endpoint.url, method="GET"))
    declare(tmp_path / "agents", "Tracker", STATUS_AGENT)
    registry = await start()
    gateway.reply(ToolCalls([("c1", "order_status", '{"order_id": "7"}')]), Text("ok"))
    await ask(registry, gateway, "Tracker")
    assert endpoint.requests[0][0] == "GET" and endpoint.requests[0][2] == {"order_id": "7"}


async def slow(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(5)
    return web.Response(text="late")


async def failing(request: web.Request) -> web.StreamResponse:
    return web.Response(status=500, text="database down")


async def huge(request: web.Request) -> web.StreamResponse:
    return web.Response(text="x" * 5000)


@pytest.mark.parametrize(
    ("answer", "extra", "told"),
    [
        (failing, {}, "answered HTTP 500: database down"),
        (slow, {"timeout": 0.2}, "did not answer within 0.2 s"),
        (huge, {"max_response_bytes": 1000}, "larger than max_response_bytes (1000)"),
    ],
    ids=["500", "timeout", "oversize"],
)
async def test_http_tool_failures_are_tool_errors_the_model_sees(
    tmp_path: Path,
    start: Start,
    gateway: FakeGateway,
    hooks: FakeHooks,
    endpoint: Endpoint,
    monkeypatch: pytest.MonkeyPatch,
    answer: Callable[[web.Request], Awaitable[web.StreamResponse]],
    extra: dict[str, Any],
    told: str,
) -> None:
    monkeypatch.setenv("ORDERS_TOKEN", "tok")
    endpoint.answer = answer
    write(tmp_path / "tools", "status.yaml", http_tool(endpoint.url, **extra))
    declare(tmp_path / "agents", "Tracker", STATUS_AGENT)
    registry = await start()
    gateway.reply(ToolCalls([("c1", "order_status", '{"order_id": "7"}')]), Text("Sorry, no status."))

    assert await ask(registry, gateway, "Tracker") == "Sorry, no status."

    [result] = tool_messages(gateway.requests[1].body)
    assert result.startswith("celgate: HTTP tool order_status: ") and told in result
    assert len(result) < 1200  # an oversized body is cut at the limit
    [execution] = hooks.executed
    assert execution.outcome == "error"


async def test_parallel_tool_calls_run_concurrently(
    tmp_path: Path, start: Start, gateway: FakeGateway, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each call waits at the service until both arrived: run one after the other, they would time out."""
    monkeypatch.setenv("ORDERS_TOKEN", "tok")
    both_arrived = asyncio.Event()

    async def rendezvous(request: web.Request) -> web.StreamResponse:
        if len(endpoint.requests) == 2:
            both_arrived.set()
        await asyncio.wait_for(both_arrived.wait(), 5)
        return web.Response(text=f"order {endpoint.requests[-1][2]['order_id']} seen")

    endpoint.answer = rendezvous
    write(tmp_path / "tools", "status.yaml", http_tool(endpoint.url, timeout=8))
    declare(tmp_path / "agents", "Tracker", STATUS_AGENT + "parallel_tool_calls: true\n")
    registry = await start()
    calls = [("c1", "order_status", '{"order_id": "1"}'), ("c2", "order_status", '{"order_id": "2"}')]
    gateway.reply(ToolCalls(calls), Text("Both seen."))

    async with asyncio.timeout(6):
        assert await ask(registry, gateway, "Tracker") == "Both seen."
    assert gateway.requests[0].body["parallel_tool_calls"] is True
    assert len(tool_messages(gateway.requests[1].body)) == 2


# --- failures are reported, and the rest keeps serving ------------------------------------------------


async def test_an_invalid_agent_yaml_is_reported_with_file_line_and_field(
    tmp_path: Path, start: Start, gateway: FakeGateway, hooks: FakeHooks
) -> None:
    write(tmp_path / "tools", "orders.py", ORDERS_PY)
    declare(tmp_path / "agents", "Orders", ORDERS_AGENT)
    bad = declare(tmp_path / "agents", "Broken", "instructions: Hi.\ntools: [lookup_order]\nmax_turns: many\n")
    typo = declare(tmp_path / "agents", "Typo", "instructions: Hi.\ntool: [lookup_order]\n")
    missing = declare(tmp_path / "agents", "Missing", "instructions: Hi.\ntools:\n  - lookup_order\n  - nope\n")
    unsafe = declare(tmp_path / "agents", "Unsafe", "instructions: !!python/object/apply:os.system [id]\n")
    registry = await start()

    failures = {f.agent: f.as_json() for f in registry.failures()}
    assert {k: (v["file"], v["line"], v["field"], v["kind"]) for k, v in failures.items()} == {
        "Broken": (str(bad), 3, "max_turns", "invalid_spec"),
        "Missing": (str(missing), 4, "tools[1]", "invalid_spec"),
        "Typo": (str(typo), 2, "tool", "invalid_spec"),
        "Unsafe": (str(unsafe), 1, "instructions", "invalid_yaml"),  # no tag constructs anything
    }
    assert "max_turns must be a positive integer" in failures["Broken"]["message"]
    assert "no gateway tool named 'nope'" in failures["Missing"]["message"]
    assert sorted(hooks.load_failures) == [
        ("Broken", "invalid_spec"),
        ("Missing", "invalid_spec"),
        ("Typo", "invalid_spec"),
        ("Unsafe", "invalid_yaml"),
    ]
    assert registry.names() == ["Orders"]
    gateway.reply(Text("Still here."))
    assert await ask(registry, gateway, "Orders") == "Still here."


async def test_a_broken_tool_module_is_reported_and_the_other_tools_serve(
    tmp_path: Path, start: Start, gateway: FakeGateway, hooks: FakeHooks
) -> None:
    write(tmp_path / "tools", "orders.py", ORDERS_PY)
    broken = write(tmp_path / "tools", "broken.py", "import no_such_module_here\n")
    write(tmp_path / "tools", "empty.py", "X = 1\n")
    write(tmp_path / "tools", "bad.yaml", "kind: http\nname: bad tool\nurl: http://x\n")
    write(tmp_path / "tools", "shadow.yaml", http_tool("http://127.0.0.1:9/x", name="lookup_order", headers={}))
    declare(tmp_path / "agents", "Orders", ORDERS_AGENT)
    registry = await start()

    failures = {f["tool"]: f for f in (failure.as_json() for failure in registry.tool_failures())}
    assert {k: v["kind"] for k, v in failures.items()} == {
        "bad.yaml": "invalid_spec",
        "broken.py": "import_error",
        "shadow.yaml": "duplicate_tool",
        "empty.py": "no_tools",
    }
    assert failures["broken.py"]["file"] == str(broken)
    assert "ModuleNotFoundError: No module named 'no_such_module_here'" in failures["broken.py"]["message"]
    assert (failures["bad.yaml"]["line"], failures["bad.yaml"]["field"]) == (2, "name")
    assert sorted(hooks.tool_load_failures) == sorted((k, v["kind"]) for k, v in failures.items())
    assert [t["name"] for t in registry.tools()] == ["cancel_order", "lookup_order"]
    gateway.reply(ToolCalls([("c1", "lookup_order", '{"order_id": "7"}')]), Text("Shipped."))
    assert await ask(registry, gateway, "Orders") == "Shipped."
    assert tool_messages(gateway.requests[1].body) == ["7: shipped"]


async def test_a_missing_environment_variable_fails_the_http_tool(
    tmp_path: Path, start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORDERS_TOKEN", raising=False)
    write(tmp_path / "tools", "status.yaml", http_tool("http://127.0.0.1:9/status"))
    registry = await start()
    [failure] = registry.tool_failures()
    assert (failure.kind, failure.field) == ("missing_env", "headers.Authorization")
    assert "ORDERS_TOKEN is not set" in failure.message


async def test_an_unreachable_mcp_server_is_reported_and_the_rest_serves(
    tmp_path: Path, start: Start, gateway: FakeGateway, hooks: FakeHooks
) -> None:
    from tests.helpers import free_port

    write(tmp_path / "tools", "orders.py", ORDERS_PY)
    write(
        tmp_path / "tools", "docs.yaml", f"kind: mcp\nname: docs\nurl: http://127.0.0.1:{free_port()}/mcp\ntimeout: 3\n"
    )
    declare(tmp_path / "agents", "Orders", ORDERS_AGENT.replace('"cancel_*"]', '"cancel_*", "docs_*"]'))
    registry = await start()

    [failure] = registry.tool_failures()
    assert (failure.name, failure.kind) == ("docs.yaml", "mcp_unreachable")
    assert "MCP server 'docs'" in failure.message
    assert hooks.tool_load_failures == [("docs.yaml", "mcp_unreachable")]
    gateway.reply(Text("Fine."))
    assert await ask(registry, gateway, "Orders") == "Fine."
    assert sorted(t["function"]["name"] for t in gateway.requests[0].body["tools"]) == ["cancel_order", "lookup_order"]


# --- structured output, handoffs, and Python drop-ins using gateway tools ----------------------------


async def test_a_json_schema_output_is_requested_and_validated(
    tmp_path: Path, start: Start, gateway: FakeGateway
) -> None:
    declare(
        tmp_path / "agents",
        "Classifier",
        """
        instructions: Classify the message.
        output:
          schema:
            type: object
            properties: {label: {type: string, enum: [spam, ham]}}
            required: [label]
            additionalProperties: false
        """,
    )
    registry = await start()
    gateway.reply(Text('{"label": "spam"}'))

    assert json.loads(await ask(registry, gateway, "Classifier", "WIN A PRIZE")) == {"label": "spam"}
    response_format = gateway.requests[0].body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["schema"]["required"] == ["label"]


async def test_a_declarative_agent_hands_off_to_another(tmp_path: Path, start: Start, gateway: FakeGateway) -> None:
    write(tmp_path / "tools", "orders.py", ORDERS_PY)
    declare(tmp_path / "agents", "Front", "instructions: Route the user.\nhandoffs: [Orders]\n")
    declare(tmp_path / "agents", "Orders", ORDERS_AGENT.replace("tool_choice: required\n", ""))
    registry = await start()
    gateway.reply(
        ToolCalls([("h1", "transfer_to_orders", "{}")]),
        ToolCalls([("c1", "lookup_order", '{"order_id": "7"}')]),
        Text("Shipped."),
    )
    assert await ask(registry, gateway, "Front") == "Shipped."
    assert [t["function"]["name"] for t in gateway.requests[0].body["tools"]] == ["transfer_to_orders"]
    assert tool_messages(gateway.requests[2].body)[-1] == "7: shipped"


async def test_a_python_drop_in_uses_a_gateway_tool_by_name(
    tmp_path: Path, start: Start, gateway: FakeGateway, hooks: FakeHooks
) -> None:
    write(tmp_path / "tools", "orders.py", ORDERS_PY)
    write_agent(
        tmp_path / "agents",
        "Helper",
        """
        from agents import Agent
        from celgate.adapters import gateway_tool

        agent = Agent(name="Helper", instructions="Help.", tools=[gateway_tool("lookup_order")])
        """,
    )
    write_agent(
        tmp_path / "agents",
        "Unknown",
        """
        from agents import Agent
        from celgate.adapters import gateway_tool

        agent = Agent(name="Unknown", tools=[gateway_tool("no_such_tool")])
        """,
    )
    registry = await start()
    gateway.reply(ToolCalls([("c1", "lookup_order", '{"order_id": "9"}')]), Text("Done."))

    assert await ask(registry, gateway, "Helper") == "Done."

    assert tool_messages(gateway.requests[1].body) == ["9: shipped"]
    assert [(c.name, c.source) for c in hooks.checked] == [("lookup_order", "gateway")]
    assert [(e.agent, e.tool, e.outcome) for e in hooks.executed] == [("Helper", "lookup_order", "ok")]
    [failure] = registry.failures()
    assert (failure.agent, failure.kind) == ("Unknown", "import_error")
    assert "no gateway tool named 'no_such_tool'" in failure.summary


# --- hot reload ---------------------------------------------------------------------------------------

REFUNDS_PY = """
from agents import function_tool


@function_tool
def refund_order(order_id: str) -> str:
    \"\"\"Refund an order.\"\"\"
    return "refunded {version}"
"""


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_tool_files_reload_and_declarative_agents_follow(
    tmp_path: Path, start: Start, gateway: FakeGateway
) -> None:
    tools = tmp_path / "tools"
    write(tools, "orders.py", ORDERS_PY)
    declare(tmp_path / "agents", "Orders", ORDERS_AGENT.replace('"cancel_*"]', '"cancel_*", "refund_*"]'))
    registry = await start()
    watching = asyncio.create_task(registry.watch())
    try:
        await asyncio.sleep(0.2)  # the watchers start on the task's first step

        def offers(name: str) -> bool:
            loaded = registry.get("Orders")
            return loaded is not None and name in loaded.tools

        write(tools, "refunds.py", REFUNDS_PY.format(version="v1"))
        await eventually(lambda: offers("refund_order"))
        gateway.reply(ToolCalls([("c1", "refund_order", '{"order_id": "7"}')]), Text("ok"))
        await ask(registry, gateway, "Orders")
        assert tool_messages(gateway.requests[1].body) == ["refunded v1"]

        write(tools, "refunds.py", "raise RuntimeError('half-written')\n")
        await eventually(lambda: bool(registry.tool_failures()))
        assert offers("refund_order")  # the last good version keeps serving

        write(tools, "refunds.py", REFUNDS_PY.format(version="v2"))
        await eventually(lambda: not registry.tool_failures())
        gateway.reply(ToolCalls([("c2", "refund_order", '{"order_id": "7"}')]), Text("ok"))
        await ask(registry, gateway, "Orders")
        assert tool_messages(gateway.requests[3].body) == ["refunded v2"]

        (tools / "refunds.py").unlink()
        await eventually(lambda: not offers("refund_order"))
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)


async def test_a_python_tool_that_raises_is_a_recorded_failure_the_model_reads(
    tmp_path: Path, start: Start, gateway: FakeGateway, hooks: FakeHooks
) -> None:
    write(tmp_path / "tools", "flaky.py", FLAKY_PY)
    declare(tmp_path / "agents", "Flaky", "instructions: Try.\ntools: [flaky]\n")
    registry = await start()
    gateway.reply(ToolCalls([("c1", "flaky", "{}")]), Text("It failed."))

    assert await ask(registry, gateway, "Flaky") == "It failed."

    [result] = tool_messages(gateway.requests[1].body)
    assert result.startswith("An error occurred while running the tool")  # the SDK's error result
    [execution] = hooks.executed
    assert (execution.tool, execution.outcome) == ("flaky", "error")
