"""The drop-ins shipped in ./agents load and run, with the gateway tools shipped in ./tools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celgate.adapters import AgentRegistry, run_completion, stream_completion

from .conftest import FakeGateway, FakeHooks, Text, ToolCalls, caller_for, collect

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "agents"


async def examples(make_registry: Any) -> AgentRegistry:
    registry = await make_registry(EXAMPLES, tools=REPO / "tools")
    assert registry.failures() == [] and registry.tool_failures() == []
    return registry


async def test_the_examples_load_with_their_export_kinds(make_registry: Any) -> None:
    listed = {a["name"]: a for a in (await examples(make_registry)).agents()}
    assert (listed["WeatherAgent"]["kind"], listed["WeatherAgent"]["tools"]) == (
        "agent",
        ["convert_units", "get_weather"],
    )
    assert (listed["TriageWorkflow"]["kind"], listed["TriageWorkflow"]["tools"]) == (
        "run_workflow",
        ["get_invoice", "issue_refund"],
    )
    assert listed["WeatherAgent"]["model"] == "test-model"  # sets none: the default applies
    assert (listed["OrderDesk"]["kind"], listed["OrderDesk"]["tools"]) == (
        "declarative",
        ["lookup_order", "docs_publish", "docs_search", "gateway_health"],
    )
    assert sorted(listed) == ["OrderDesk", "TriageWorkflow", "WeatherAgent"]


async def test_the_order_desk_uses_python_and_mcp_gateway_tools(
    make_registry: Any, gateway: FakeGateway, hooks: FakeHooks
) -> None:
    registry = await examples(make_registry)
    gateway.reply(
        ToolCalls([("c1", "lookup_order", '{"order_id": "1001"}'), ("c2", "docs_search", '{"query": "returns"}')]),
        Text("Shipped; returns are free for 30 days."),
    )
    result = await run_completion(
        registry.get("OrderDesk"),
        {"messages": [{"role": "user", "content": "Order 1001, and can I return it?"}]},
        caller_for(gateway, "OrderDesk"),
    )
    assert result["choices"][0]["message"]["content"] == "Shipped; returns are free for 30 days."
    first, second = (r.body for r in gateway.requests)
    assert (first["tool_choice"], first["parallel_tool_calls"]) == ("auto", False)
    outputs = [m["content"] for m in second["messages"] if m["role"] == "tool"]
    assert outputs[0] == "Order 1001: shipped, via DHL (2 items)."
    assert "free within 30 days" in str(outputs[1])
    assert [(c.name, c.source, c.server) for c in hooks.checked] == [
        ("lookup_order", "gateway", ""),
        ("docs_search", "mcp", "docs"),
    ]


async def test_weather_agent_uses_its_tools(make_registry: Any, gateway: FakeGateway, hooks: FakeHooks) -> None:
    registry = await examples(make_registry)
    gateway.reply(
        ToolCalls([("c1", "get_weather", '{"location": "Paris"}'), ("c2", "convert_units", '{"celsius": 21}')]),
        Text("Paris: 21 C (69.8 F), sunny."),
    )
    result = await run_completion(
        registry.get("WeatherAgent"),
        {"messages": [{"role": "user", "content": "Weather in Paris, in F?"}]},
        caller_for(gateway, "WeatherAgent"),
    )
    assert result["choices"][0]["message"]["content"] == "Paris: 21 C (69.8 F), sunny."
    tool_outputs = [m["content"] for m in gateway.requests[1].body["messages"] if m["role"] == "tool"]
    assert tool_outputs == ["Paris: 21.0 C, sunny", "21.0 C = 69.8 F"]
    assert [name for name, _ in hooks.finished] == ["get_weather", "convert_units"]


async def test_triage_workflow_hands_off_to_billing(make_registry: Any, gateway: FakeGateway) -> None:
    registry = await examples(make_registry)
    gateway.reply(
        ToolCalls([("h1", "transfer_to_billing", "{}")]),
        ToolCalls([("c1", "get_invoice", '{"invoice_id": "INV-1001"}')]),
        Text("INV-1001 is paid."),
    )
    chunks = await collect(
        stream_completion(
            registry.get("TriageWorkflow"),
            {"messages": [{"role": "user", "content": "Is INV-1001 paid?"}], "stream": True},
            caller_for(gateway, "TriageWorkflow"),
        )
    )
    events = [c["celgate"] for c in chunks if "celgate" in c]
    assert events[0] == {"type": "handoff", "from": "Triage", "to": "Billing"}
    assert events[2]["output"] == "INV-1001: 49.00 EUR for ACME, paid"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "INV-1001 is paid. "
