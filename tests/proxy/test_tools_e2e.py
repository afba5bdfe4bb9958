"""Gateway tools and declarative agents through the live proxy, end to end.

The real ``openai`` client talks to celgate; celgate runs a declarative agent
whose model calls come back over loopback and go to the scripted fake
upstream, which records what it received. The MCP tools come from a real MCP
server (the ``mcp`` package's FastMCP, ``tests/helpers/mcp_server.py``)
started for the test, over streamable HTTP or stdio.

A gateway tool call meets the ``tool_call`` point twice: on the agent's model
response (``tool.source == "upstream"``, as every model's calls), then before
it runs (``tool.source == "mcp"`` and ``tool.server``, or ``"gateway"``). The
policy below decides at the second point and lets the first through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.helpers import (
    ALLOW_REQUESTS,
    REPO,
    Celgate,
    OpenAIFactory,
    StartCelgate,
    free_port,
    write_policy,
    write_yaml,
)
from tests.helpers.dropins import sdk_environment  # noqa: F401  (autouse here)
from tests.helpers.fakeupstream import FakeUpstream, Script, completion, text_stream, tool_call_stream
from tests.helpers.observe import get_json, sample, scrape
from tests.helpers.process import clean_env

MCP_SERVER = REPO / "tests" / "helpers" / "mcp_server.py"

POLICY = (
    ALLOW_REQUESTS
    + """\
  - name: docs-search                 # the docs server's search, not about secrets
    on: tool_call
    tools: ["docs_search"]
    when: >-
      tool.source == "upstream" ||
      (tool.source == "mcp" && tool.server == "docs" && tool.arguments.query != "secrets")
    effect: allow
    reason: searching the docs
  - name: orders
    on: tool_call
    tools: ["lookup_order"]
    effect: allow
"""
)

ORDERS_PY = """\
from agents import function_tool


@function_tool
def lookup_order(order_id: str) -> str:
    \"\"\"Look up an order by its id.\"\"\"
    return f"{order_id}: shipped"
"""

DOCS_AGENT = """\
description: Answers from the docs.
instructions: Search the docs before you answer.
tools: ["docs_*", lookup_order]
parallel_tool_calls: true
"""


@pytest.fixture
async def mcp_url(tmp_path: Path) -> AsyncIterator[str]:
    """A FastMCP server on a loopback port, serving streamable HTTP at /mcp."""
    port = free_port()
    env = clean_env(MCP_WIPE_LOG=str(tmp_path / "wiped.log"))
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(MCP_SERVER), "http", str(port), env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await _until_listening(port)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        await process.wait()


async def _until_listening(port: int) -> None:
    async with asyncio.timeout(20):
        while True:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            await asyncio.sleep(0.05)


def write(path: Path, text: str) -> Path:
    return write_yaml(path.parent, text, path.name)


async def start(start_celgate: StartCelgate, upstream: FakeUpstream, tmp_path: Path, **overrides: Any) -> Celgate:
    settings: dict[str, Any] = {
        "upstream": upstream.base_url,
        "agents": tmp_path / "agents",
        "tools": tmp_path / "tools",
        "agents_model": "fake-model",
        "no_policy": False,
        "policies": write_policy(tmp_path, POLICY),
        "audit_log": str(tmp_path / "audit.jsonl"),
    }
    return await start_celgate(**{**settings, **overrides})


async def metric(http: aiohttp.ClientSession, celgate: Celgate, name: str, **labels: str) -> float | None:
    return sample(await scrape(http, celgate), name, **labels)


def tool_outputs(body: dict[str, Any]) -> dict[str, str]:
    """Each tool result's text (MCP results arrive as a list of text parts)."""
    return {m["tool_call_id"]: _text(m["content"]) for m in body["messages"] if m["role"] == "tool"}


def _text(content: str | list[dict[str, Any]]) -> str:
    return content if isinstance(content, str) else "".join(part["text"] for part in content)


async def test_mcp_tools_are_offered_governed_run_and_recorded(
    upstream: FakeUpstream,
    start_celgate: StartCelgate,
    oai: OpenAIFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    mcp_url: str,
) -> None:
    write(tmp_path / "tools" / "docs.yaml", f"kind: mcp\nname: docs\nurl: {mcp_url}\n")
    write(tmp_path / "tools" / "orders.py", ORDERS_PY)
    write(tmp_path / "agents" / "Docs" / "agent.yaml", DOCS_AGENT)
    celgate = await start(start_celgate, upstream, tmp_path)
    calls = [
        ("call_search", "docs_search", '{"query": "install", "limit": 2}'),
        ("call_secret", "docs_search", '{"query": "secrets"}'),
        ("call_order", "lookup_order", '{"order_id": "7"}'),
    ]
    upstream.push(Script(json=completion(None, calls)), Script(json=completion("Install with pip.")))

    reply = await oai(celgate.url).chat.completions.create(
        model="Docs",
        messages=[{"role": "user", "content": "How do I install it?"}],
        extra_headers={"x-request-id": "r1"},
    )

    assert reply.choices[0].message.content == "Install with pip."
    first, second = upstream.requests
    offered = {t["function"]["name"]: t["function"] for t in first.body["tools"]}
    # docs_wipe exists on the server, but no rule could allow it: it is never offered to the model.
    assert sorted(offered) == ["docs_search", "lookup_order"]
    assert offered["docs_search"]["description"] == "Search the documentation."
    assert offered["docs_search"]["parameters"]["required"] == ["query"]
    assert first.body["parallel_tool_calls"] is True
    outputs = tool_outputs(second.body)
    assert outputs["call_search"] == "2 results for 'install'"
    assert outputs["call_order"] == "7: shipped"
    assert outputs["call_secret"].startswith("celgate: docs_search denied by policy")

    assert (
        await metric(http, celgate, "celgate_tool_calls_total", tool="docs_search", decision="allow", source="mcp") == 1
    )
    assert (
        await metric(http, celgate, "celgate_tool_calls_total", tool="docs_search", decision="deny", source="mcp") == 1
    )
    assert await metric(http, celgate, "celgate_tool_duration_seconds_count", tool="docs_search") == 1
    listed = {t["name"]: t for t in (await get_json(http, celgate.root + "/admin/tools"))["tools"]}
    assert sorted(listed) == ["docs_search", "docs_wipe", "lookup_order"]
    assert (listed["docs_search"]["source"], listed["docs_search"]["server"]) == ("mcp", "docs")
    assert listed["docs_search"]["origin"] == mcp_url
    assert (listed["lookup_order"]["source"], listed["lookup_order"]["server"]) == ("gateway", None)

    await celgate.stop()  # flushes the audit log
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    [denial] = [r for r in records if r["point"] == "tool_call"]
    assert (denial["tool_call_id"], denial["source"], denial["server"]) == ("call_secret", "mcp", "docs")
    executions = {r["tool_call_id"]: r for r in records if r["point"] == "tool_execution"}
    assert sorted(executions) == ["call_order", "call_search"]  # the denied call never ran
    search = executions["call_search"]
    assert (search["agent"], search["tool"], search["source"], search["server"]) == (
        "Docs",
        "docs_search",
        "mcp",
        "docs",
    )
    assert (search["origin"], search["outcome"], search["result_bytes"]) == (
        mcp_url,
        "ok",
        len("2 results for 'install'"),
    )
    assert search["request_id"] == "r1" and search["duration_ms"] >= 0
    assert executions["call_order"]["origin"] == str((tmp_path / "tools" / "orders.py").resolve())


async def test_a_tool_the_model_invents_outside_the_offer_never_runs(
    upstream: FakeUpstream, start_celgate: StartCelgate, oai: OpenAIFactory, tmp_path: Path, mcp_url: str
) -> None:
    write(tmp_path / "tools" / "docs.yaml", f"kind: mcp\nname: docs\nurl: {mcp_url}\n")
    write(tmp_path / "agents" / "Docs" / "agent.yaml", DOCS_AGENT.replace(", lookup_order]", "]"))
    celgate = await start(start_celgate, upstream, tmp_path)
    upstream.push(Script(json=completion(None, [("call_wipe", "docs_wipe", "{}")])))

    reply = await oai(celgate.url).chat.completions.create(model="Docs", messages=[{"role": "user", "content": "Wipe"}])

    # The proxy strips the call from the agent's model answer (tool.source == "upstream"): nothing runs.
    assert reply.choices[0].message.content == "celgate: docs_wipe denied by policy (default): no rule allows it"
    assert not (tmp_path / "wiped.log").exists()


async def test_a_stdio_mcp_server_streams_tool_activity_and_the_final_text(
    upstream: FakeUpstream, start_celgate: StartCelgate, oai: OpenAIFactory, tmp_path: Path
) -> None:
    server = {"kind": "mcp", "name": "docs", "command": sys.executable, "args": [str(MCP_SERVER), "stdio"]}
    server["env"] = {"MCP_WIPE_LOG": str(tmp_path / "wiped.log")}
    write(tmp_path / "tools" / "docs.yaml", json.dumps(server))
    write(tmp_path / "agents" / "Docs" / "agent.yaml", DOCS_AGENT.replace(", lookup_order]", "]"))
    celgate = await start(start_celgate, upstream, tmp_path)
    upstream.push(
        Script(steps=tool_call_stream([("call_1", "docs_search", '{"query": "pip"}')])),
        Script(steps=text_stream(["Use", " pip."])),
    )

    stream = await oai(celgate.url).chat.completions.create(
        model="Docs", messages=[{"role": "user", "content": "Install?"}], stream=True
    )
    chunks = [chunk async for chunk in stream]

    events = [c.model_extra["celgate"] for c in chunks if (c.model_extra or {}).get("celgate")]
    assert events == [
        {"type": "tool_call", "id": "call_1", "name": "docs_search", "arguments": '{"query": "pip"}', "agent": "Docs"},
        {
            "type": "tool_result",
            "id": "call_1",
            "name": "docs_search",
            "output": "3 results for 'pip'",
            "agent": "Docs",
        },
    ]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Use pip."
    assert tool_outputs(upstream.requests[1].body) == {"call_1": "3 results for 'pip'"}


async def test_a_declarative_agent_answers_on_the_responses_api(
    upstream: FakeUpstream, start_celgate: StartCelgate, oai: OpenAIFactory, tmp_path: Path
) -> None:
    write(tmp_path / "tools" / "orders.py", ORDERS_PY)
    write(tmp_path / "agents" / "Orders" / "agent.yaml", "instructions: Track orders.\ntools: [lookup_order]\n")
    celgate = await start(start_celgate, upstream, tmp_path)
    upstream.push(
        Script(json=completion(None, [("c1", "lookup_order", '{"order_id": "7"}')])),
        Script(json=completion("Order 7 shipped.")),
    )
    response = await oai(celgate.url).responses.create(model="Orders", input="Where is order 7?")
    assert (response.model, response.output_text) == ("Orders", "Order 7 shipped.")
    assert tool_outputs(upstream.requests[1].body) == {"c1": "7: shipped"}


async def test_broken_tools_and_agents_are_reported_and_the_rest_serves(
    upstream: FakeUpstream,
    start_celgate: StartCelgate,
    oai: OpenAIFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    write(tmp_path / "tools" / "orders.py", ORDERS_PY)
    write(tmp_path / "tools" / "broken.py", "raise RuntimeError('no database configured')\n")
    write(tmp_path / "tools" / "docs.yaml", f"kind: mcp\nname: docs\nurl: http://127.0.0.1:{free_port()}/mcp\n")
    write(tmp_path / "agents" / "Orders" / "agent.yaml", "instructions: Track orders.\ntools: [lookup_order]\n")
    bad = write(tmp_path / "agents" / "Bad" / "agent.yaml", "instructions: Hi.\ntool_choice: [auto]\n")
    celgate = await start(start_celgate, upstream, tmp_path)

    errors = {e["tool"]: e for e in (await get_json(http, celgate.root + "/admin/tools/errors"))["errors"]}
    assert {name: e["kind"] for name, e in errors.items()} == {
        "broken.py": "import_error",
        "docs.yaml": "mcp_unreachable",
    }
    assert "RuntimeError: no database configured" in errors["broken.py"]["message"]
    for name, kind in (("broken.py", "import_error"), ("docs.yaml", "mcp_unreachable")):
        assert await metric(http, celgate, "celgate_tool_load_failures_total", tool=name, kind=kind) == 1
    [agent_error] = (await get_json(http, celgate.root + "/admin/agents/errors"))["errors"]
    assert (agent_error["agent"], agent_error["file"], agent_error["line"], agent_error["field"]) == (
        "Bad",
        str(bad),
        2,
        "tool_choice",
    )
    with pytest.raises(openai.APIStatusError) as refused:
        await oai(celgate.url).chat.completions.create(model="Bad", messages=[{"role": "user", "content": "Hi"}])
    assert refused.value.status_code == 503 and "tool_choice" in refused.value.message

    upstream.push(Script(json=completion("Fine.")))
    reply = await oai(celgate.url).chat.completions.create(model="Orders", messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content == "Fine."
