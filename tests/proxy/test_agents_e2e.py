"""Drop-in agents served through the live proxy, end to end.

Real sockets and the real Agents SDK: the ``openai`` client (or a raw HTTP
client) talks to celgate; celgate runs the drop-in in-process; the agent's
own model calls come back to celgate over loopback and go to the scripted
fake upstream, which records what it received. So each test sees the whole
path: client -> celgate -> agent -> celgate -> upstream, and back.

Policy note (test 3 and others): an agent's tool call meets the ``tool_call``
policy point twice. First, the model's tool call passes the proxy's upstream
tool-call check on the agent's own model call (``tool.source == "upstream"``);
then the agent's guardrail checks it before executing (``tool.source ==
"agent"``). The policies below allow every tool at the upstream point and
decide only at the agent point, so a denied tool still reaches the agent and
is refused there (never executed), which is what governance of drop-in tools
means. ``celgate_tool_calls_total`` counts both checks, told apart by its ``source`` label.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.helpers import Celgate, OpenAIFactory, StartCelgate, assert_openai_error, write_policy
from tests.helpers.dropins import sdk_environment, write_agent  # noqa: F401  (autouse here)
from tests.helpers.fakeupstream import (
    FakeUpstream,
    Script,
    Step,
    chat_chunk,
    completion,
    sse,
    text_stream,
    tool_call_stream,
)
from tests.helpers.observe import Samples, eventually, get_json, sample, scrape

CLIENT_KEY = "sk-e2e-alice"
DEADLINE = 15.0  # seconds any bounded wait in this module may take before failing


# --- fixtures and helpers ---------------------------------------------------------------------------


async def start_with_agents(
    start_celgate: StartCelgate, upstream: FakeUpstream, agents: Path, **overrides: Any
) -> Celgate:
    settings: dict[str, Any] = {"upstream": upstream.base_url, "agents": agents, "agents_model": "fake-model"}
    return await start_celgate(**{**settings, **overrides})


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- 1. multi-turn history reaches the model ----------------------------------------------------------

HISTORY_AGENT = """\
    from agents import Agent

    agent = Agent(name="HistoryAgent", instructions="You are the history agent.")
"""
HISTORY = [
    {"role": "system", "content": "Answer in English."},
    {"role": "user", "content": "What is the weather in Oslo?"},
    {
        "role": "assistant",
        "content": "Let me look that up.",
        "tool_calls": [
            {"id": "call_old", "type": "function", "function": {"name": "lookup", "arguments": '{"city": "Oslo"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_old", "content": "Oslo: 4 C, snow"},
    {"role": "user", "content": "And in Fahrenheit?"},
]
RECORD_AGENT_CALLS = f"""\
    version: 1
    defaults:
      decision: allow
    principals:
      - id: alice
        key_sha256: {sha256(CLIENT_KEY)}
    rules:
      - name: agent-model-call        # matches only the agent's own call to celgate (x-celgate-agent)
        on: request
        agents: ["HistoryAgent"]
        models: ["fake-model"]
        effect: allow
"""


async def test_the_whole_history_reaches_the_upstream_with_the_callers_identity(
    upstream: FakeUpstream, start_celgate: StartCelgate, oai: OpenAIFactory, tmp_path: Path
) -> None:
    write_agent(tmp_path / "agents", "HistoryAgent", HISTORY_AGENT)
    audit = tmp_path / "audit.jsonl"
    celgate = await start_with_agents(
        start_celgate,
        upstream,
        tmp_path / "agents",
        no_policy=False,
        policies=write_policy(tmp_path, RECORD_AGENT_CALLS),
        audit_log=str(audit),
        audit_allows=True,
    )
    upstream.push(Script(json=completion("39 F.")))
    reply = await oai(celgate.url, api_key=CLIENT_KEY).chat.completions.create(
        model="HistoryAgent", messages=HISTORY, extra_headers={"x-request-id": "req-history-1"}
    )

    assert reply.model == "HistoryAgent"
    assert reply.choices[0].message.content == "39 F."
    assert reply.usage is not None and reply.usage.total_tokens == 14
    [call] = upstream.requests
    assert call.path == "/v1/chat/completions"
    assert call.body["model"] == "fake-model"
    sent = call.body["messages"]
    assert sent[0] == {"role": "system", "content": "You are the history agent."}  # the instructions, prepended
    assert [m["role"] for m in sent[1:]] == ["system", "user", "assistant", "tool", "user"]
    assert [m.get("content") for m in sent[1:]] == [
        "Answer in English.",
        "What is the weather in Oslo?",
        "Let me look that up.",
        "Oslo: 4 C, snow",
        "And in Fahrenheit?",
    ]
    assert sent[3]["tool_calls"] == HISTORY[2]["tool_calls"]  # one assistant message: text and its tool call
    assert sent[4]["tool_call_id"] == "call_old"
    # The caller's own key went upstream verbatim; celgate's internal headers never leave it.
    headers = {k.lower(): v for k, v in call.headers.items()}
    assert headers["authorization"] == f"Bearer {CLIENT_KEY}"
    assert headers["x-request-id"] == "req-history-1"
    assert not {"x-celgate-agent", "x-celgate-internal", "x-celgate-upstream"} & headers.keys()

    # x-celgate-agent is read by celgate on the loopback call and not forwarded, so the upstream cannot show
    # it: the audit shows it instead. The agent's call was admitted as request.agent == "HistoryAgent", for
    # the caller's principal (its Authorization came back on the loopback call), under the same request id.
    await celgate.stop()
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    requests = [(r["subject"], r["rule"], r["principal"]) for r in records if r["point"] == "request"]
    assert requests == [("HistoryAgent", None, "alice"), ("fake-model", "agent-model-call", "alice")]
    assert {r["request_id"] for r in records} == {"req-history-1"}


async def test_the_history_reaches_the_upstream_on_a_stream_too(
    upstream: FakeUpstream, start_celgate: StartCelgate, oai: OpenAIFactory, tmp_path: Path
) -> None:
    write_agent(tmp_path / "agents", "HistoryAgent", HISTORY_AGENT)
    celgate = await start_with_agents(start_celgate, upstream, tmp_path / "agents")
    upstream.push(Script(steps=text_stream(["39", " F."])))
    stream = await oai(celgate.url, api_key=CLIENT_KEY).chat.completions.create(
        model="HistoryAgent", messages=HISTORY, stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "39 F."
    [call] = upstream.requests
    assert call.body["stream"] is True
    assert call.body["stream_options"] == {"include_usage": True}
    assert [m["role"] for m in call.body["messages"]] == ["system", "system", "user", "assistant", "tool", "user"]
    assert call.headers["Authorization"] == f"Bearer {CLIENT_KEY}"


async def test_concurrent_runs_each_carry_their_own_callers_identity(
    upstream: FakeUpstream, start_celgate: StartCelgate, oai: OpenAIFactory, tmp_path: Path
) -> None:
    """Runs share one gateway client; each model call must still carry the headers of its own request."""
    write_agent(tmp_path / "agents", "HistoryAgent", HISTORY_AGENT)
    celgate = await start_with_agents(start_celgate, upstream, tmp_path / "agents")
    held = asyncio.Event()
    first = text_stream(["one"])
    first[1].wait = held  # the first run's model call stays open until every run has made its call
    upstream.push(Script(steps=first), *(Script(steps=text_stream(["more"])) for _ in range(4)))

    async def run(index: int) -> str:
        stream = await oai(celgate.url, api_key=f"sk-caller-{index}").chat.completions.create(
            model="HistoryAgent",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            extra_headers={"x-request-id": f"req-caller-{index}"},
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    runs = [asyncio.create_task(run(index)) for index in range(5)]

    async def all_calls_arrived() -> bool:
        return len(upstream.requests) == 5

    await eventually(all_calls_arrived, "five concurrent model calls")
    held.set()
    assert sorted(await asyncio.gather(*runs)) == ["more"] * 4 + ["one"]
    headers = [{k.lower(): v for k, v in r.headers.items()} for r in upstream.requests]
    identities = {h["x-request-id"]: h["authorization"] for h in headers}
    assert identities == {f"req-caller-{i}": f"Bearer sk-caller-{i}" for i in range(5)}


async def test_in_sidecar_key_mode_the_agent_call_goes_upstream_with_celgates_key(
    upstream: FakeUpstream, start_celgate: StartCelgate, oai: OpenAIFactory, tmp_path: Path
) -> None:
    from celgate.proxy.settings import Secret

    write_agent(tmp_path / "agents", "HistoryAgent", HISTORY_AGENT)
    celgate = await start_with_agents(
        start_celgate,
        upstream,
        tmp_path / "agents",
        no_policy=False,
        upstream_api_key=Secret("sk-upstream"),
        policies=write_policy(tmp_path, RECORD_AGENT_CALLS),
    )
    with pytest.raises(openai.AuthenticationError):  # an unknown key never starts the agent
        await oai(celgate.url, api_key="sk-unknown").chat.completions.create(model="HistoryAgent", messages=HISTORY)
    assert upstream.requests == []
    upstream.push(Script(json=completion("ok")))
    reply = await oai(celgate.url, api_key=CLIENT_KEY).chat.completions.create(model="HistoryAgent", messages=HISTORY)
    assert reply.choices[0].message.content == "ok"
    [call] = upstream.requests
    assert call.headers["Authorization"] == "Bearer sk-upstream"  # the client's key stays with celgate


# --- 2. streaming deltas arrive as the model produces them --------------------------------------------

PLAIN_AGENT = """\
    from agents import Agent

    agent = Agent(name="{name}", instructions="Be brief.")
"""


async def test_the_first_delta_reaches_the_client_while_the_upstream_still_holds_the_rest(
    upstream: FakeUpstream, start_celgate: StartCelgate, oai: OpenAIFactory, tmp_path: Path
) -> None:
    write_agent(tmp_path / "agents", "Streamer", PLAIN_AGENT.format(name="Streamer"))
    celgate = await start_with_agents(start_celgate, upstream, tmp_path / "agents")
    held = asyncio.Event()
    steps = text_stream(["Hello", " there", ", world"])
    steps[2].wait = held  # the upstream sends the role chunk and "Hello", then holds " there" and the rest
    upstream.push(Script(steps=steps))

    stream = await oai(celgate.url).chat.completions.create(
        model="Streamer",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = aiter(stream)
    seen: list[Any] = []

    async def until_first_content() -> None:
        async for chunk in chunks:
            seen.append(chunk)
            if chunk.choices and chunk.choices[0].delta.content:
                return

    await asyncio.wait_for(until_first_content(), DEADLINE)  # a buffering proxy would hang here
    assert not held.is_set() and len(upstream.step_times) == 2  # the upstream has written "Hello" only
    assert seen[0].choices[0].delta.role == "assistant"
    assert seen[-1].choices[0].delta.content == "Hello"
    first_at = time.perf_counter()

    held.set()
    rest = [chunk async for chunk in chunks]
    assert upstream.step_times[2] > first_at  # " there" left the upstream after "Hello" reached the client
    text = "".join(c.choices[0].delta.content or "" for c in [*seen, *rest] if c.choices)
    assert text == "Hello there, world"
    assert [c.choices[0].finish_reason for c in rest if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert rest[-1].choices == [] and rest[-1].usage is not None and rest[-1].usage.total_tokens == 14
    assert {c.model for c in [*seen, *rest]} == {"Streamer"} and len({c.id for c in [*seen, *rest]}) == 1


async def test_a_raw_stream_is_valid_sse_ending_in_done(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    write_agent(tmp_path / "agents", "Streamer", PLAIN_AGENT.format(name="Streamer"))
    celgate = await start_with_agents(start_celgate, upstream, tmp_path / "agents")
    upstream.push(Script(steps=text_stream(["a", "b"])))
    body = {"model": "Streamer", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    async with http.post(celgate.url + "/chat/completions", json=body) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["x-request-id"]
        raw = (await response.read()).decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "ab"


# A drop-in's tools append their side effects, one line each, to the file ``{effects}`` (``_record``).
EFFECTS_PRELUDE = """\
    from pathlib import Path

    from agents import Agent, function_tool

    EFFECTS = Path({effects!r})


    def _record(line: str) -> None:
        with EFFECTS.open("a") as f:
            f.write(line + "\\n")


"""

# --- 3. governed tools: policy, side effects, metrics, audit ------------------------------------------

TOOLBOX_AGENT = (
    EFFECTS_PRELUDE
    + """\
    @function_tool
    def safe_tool(item: str) -> str:
        \"\"\"Harmless.\"\"\"
        _record(f"safe_tool {{item}}")
        return f"safe: {{item}}"


    @function_tool
    def danger_tool(target: str) -> str:
        \"\"\"Never allowed.\"\"\"
        _record(f"danger_tool {{target}}")
        return "destroyed"


    @function_tool
    def broken_tool() -> str:
        \"\"\"Always raises.\"\"\"
        _record("broken_tool")
        raise RuntimeError("the broken tool broke")


    agent = Agent(name="Toolbox", instructions="Use your tools.", tools=[safe_tool, danger_tool, broken_tool])
"""
)
TOOL_POLICY = """\
    version: 1
    defaults:
      decision: deny
      deny_message: "celgate: {subject} denied by policy ({rule}): {reason}"
    rules:
      - name: requests
        on: request
        effect: allow
      - name: model-may-propose   # the model's tool calls on the agent's own model call pass the proxy
        on: tool_call
        when: tool.source == "upstream"
        effect: allow
      - name: toolbox-tools       # ...and the agent may execute only these
        on: tool_call
        agents: ["Toolbox"]
        tools: ["safe_tool", "broken_tool"]
        when: tool.source == "agent"
        effect: allow
      - name: no-danger
        on: tool_call
        tools: ["danger_tool"]
        when: tool.source == "agent"
        effect: deny
        reason: too dangerous
      - name: no-prod-items
        on: tool_call
        tools: ["safe_tool"]
        when: tool.source == "agent" && has(tool.arguments.item) && tool.arguments.item == "prod"
        effect: deny
        reason: not prod
"""
DENIAL = "celgate: danger_tool denied by policy (no-danger): too dangerous"
THREE_CALLS = [
    ("call_safe", "safe_tool", '{"item": "apple"}'),
    ("call_danger", "danger_tool", '{"target": "prod"}'),
    ("call_broken", "broken_tool", "{}"),
]


async def start_toolbox(
    start_celgate: StartCelgate, upstream: FakeUpstream, tmp_path: Path, **settings: Any
) -> tuple[Celgate, Path]:
    """The Toolbox drop-in under ``TOOL_POLICY``; its tools write their side effects to the file returned."""
    effects = tmp_path / "effects.log"
    write_agent(tmp_path / "agents", "Toolbox", TOOLBOX_AGENT.format(effects=str(effects)))
    policies = write_policy(tmp_path, TOOL_POLICY)
    celgate = await start_with_agents(
        start_celgate, upstream, tmp_path / "agents", no_policy=False, policies=policies, **settings
    )
    return celgate, effects


@pytest.fixture
async def toolbox(upstream: FakeUpstream, start_celgate: StartCelgate, tmp_path: Path) -> tuple[Celgate, Path, Path]:
    audit = tmp_path / "audit.jsonl"
    celgate, effects = await start_toolbox(start_celgate, upstream, tmp_path, audit_log=str(audit))
    return celgate, effects, audit


def tool_outputs(body: dict[str, Any]) -> dict[str, str]:
    return {m["tool_call_id"]: m["content"] for m in body["messages"] if m["role"] == "tool"}


async def test_a_denied_tool_never_runs_and_the_model_sees_the_denial(
    toolbox: tuple[Celgate, Path, Path], upstream: FakeUpstream, oai: OpenAIFactory, http: aiohttp.ClientSession
) -> None:
    celgate, effects, audit = toolbox
    upstream.push(Script(json=completion(None, THREE_CALLS)), Script(json=completion("Done.")))
    reply = await oai(celgate.url).chat.completions.create(
        model="Toolbox", messages=[{"role": "user", "content": "Go"}], extra_headers={"x-request-id": "req-tools-1"}
    )

    assert reply.choices[0].message.content == "Done."
    assert sorted(effects.read_text().splitlines()) == ["broken_tool", "safe_tool apple"]  # never "danger_tool"
    first, second = upstream.requests
    assert sorted(t["function"]["name"] for t in first.body["tools"]) == ["broken_tool", "danger_tool", "safe_tool"]
    outputs = tool_outputs(second.body)
    assert outputs["call_safe"] == "safe: apple"
    assert outputs["call_danger"] == DENIAL
    assert outputs["call_broken"].startswith("An error occurred while running the tool")  # the SDK's error result

    samples = await scrape(http, celgate)
    calls = "celgate_tool_calls_total"
    # Each call is counted once at the upstream point (all allowed) and once at the agent point.
    for tool in ("safe_tool", "broken_tool", "danger_tool"):
        assert sample(samples, calls, tool=tool, decision="allow", source="upstream") == 1
    assert sample(samples, calls, tool="safe_tool", decision="allow", source="agent") == 1
    assert sample(samples, calls, tool="broken_tool", decision="allow", source="agent") == 1
    assert sample(samples, calls, tool="danger_tool", decision="deny", source="agent") == 1
    assert sample(samples, calls, tool="danger_tool", decision="allow", source="agent") is None
    assert sample(samples, "celgate_tool_duration_seconds_count", tool="safe_tool") == 1
    assert sample(samples, "celgate_tool_duration_seconds_count", tool="broken_tool") == 1
    assert sample(samples, "celgate_tool_duration_seconds_count", tool="danger_tool") is None  # it never ran
    assert sample(samples, "celgate_tool_failures_total", tool="broken_tool") == 1
    assert sample(samples, "celgate_tool_failures_total", tool="safe_tool") is None

    await celgate.stop()  # flushes the audit log
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    [denial] = [r for r in records if r["point"] == "tool_call"]  # allows are not audited by default
    assert denial["subject"] == "danger_tool" and denial["effect"] == "deny" and denial["rule"] == "no-danger"
    assert denial["source"] == "agent" and denial["tool_call_id"] == "call_danger"
    assert denial["request_id"] == "req-tools-1" and denial["principal"] == "anonymous"
    assert "arguments" not in denial  # audit_arguments is off


async def test_an_agent_tool_call_with_a_repeated_key_never_runs(
    toolbox: tuple[Celgate, Path, Path], upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    """The SDK keeps the last ``item``, another app the first: ``no-prod-items`` reads it, so it fails and denies.

    It is a candidate at the upstream point too (its ``when`` is not evaluated on unreadable arguments), so the
    call is stripped from the agent's own model reply: the agent never sees it, and says why.
    """
    celgate, effects, _ = toolbox
    twice = [("call_twice", "safe_tool", '{"item": "prod", "item": "apple"}')]
    upstream.push(Script(json=completion(None, twice)))
    reply = await oai(celgate.url).chat.completions.create(
        model="Toolbox", messages=[{"role": "user", "content": "Go"}]
    )
    assert not effects.exists() or effects.read_text() == ""
    assert "(the tool arguments are not one unambiguous JSON object: duplicate key 'item')" in (
        reply.choices[0].message.content or ""
    )
    assert len(upstream.requests) == 1


async def test_governed_tools_on_a_stream_show_calls_results_and_the_denial(
    toolbox: tuple[Celgate, Path, Path], upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    celgate, effects, _ = toolbox
    upstream.push(Script(steps=tool_call_stream(THREE_CALLS[:2])), Script(steps=text_stream(["Done."])))
    stream = await oai(celgate.url).chat.completions.create(
        model="Toolbox", messages=[{"role": "user", "content": "Go"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    events = [c.model_extra["celgate"] for c in chunks if (c.model_extra or {}).get("celgate")]
    assert all(c.choices and c.choices[0].delta.content in (None, "") for c in chunks if c.model_extra.get("celgate"))
    calls = {e["id"]: e for e in events if e["type"] == "tool_call"}
    results = {e["id"]: e for e in events if e["type"] == "tool_result"}
    assert calls["call_danger"] == {
        "type": "tool_call",
        "id": "call_danger",
        "name": "danger_tool",
        "arguments": '{"target": "prod"}',
        "agent": "Toolbox",
    }
    assert results["call_danger"]["output"] == DENIAL
    assert results["call_safe"]["output"] == "safe: apple"
    assert effects.read_text().splitlines() == ["safe_tool apple"]
    assert tool_outputs(upstream.requests[1].body)["call_danger"] == DENIAL
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Done."


# --- 4. broken agents are listed, counted and not served ----------------------------------------------


async def test_broken_agents_are_reported_and_working_ones_served(
    upstream: FakeUpstream,
    start_celgate: StartCelgate,
    oai: OpenAIFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    agents = tmp_path / "agents"
    write_agent(agents, "Good", PLAIN_AGENT.format(name="Good"))
    write_agent(agents, "labs/Nested", PLAIN_AGENT.format(name="Nested"))
    write_agent(agents, "Syntax", "from agents import Agent\nagent = Agent(name='x'\n")
    write_agent(agents, "NoExport", "VALUE = 1\n")
    write_agent(agents, "Helper", "from .helpers import missing\n", helpers_py="present = 1\n")
    celgate = await start_with_agents(start_celgate, upstream, agents)

    errors = {e["agent"]: e for e in (await get_json(http, celgate.root + "/admin/agents/errors"))["errors"]}
    assert sorted(errors) == ["Helper", "NoExport", "Syntax"]
    for name, error in errors.items():
        assert set(error) == {"agent", "kind", "message", "file", "line", "field", "time"}
        assert error["file"] == str(agents / name / "agent.py")
        assert error["time"].endswith("+00:00")
    assert errors["Syntax"]["kind"] == "import_error" and "SyntaxError" in errors["Syntax"]["message"]
    assert errors["NoExport"]["kind"] == "no_export"
    assert errors["Helper"]["kind"] == "import_error"
    assert "ImportError" in errors["Helper"]["message"] and "missing" in errors["Helper"]["message"]

    samples = await scrape(http, celgate)
    for name, kind in (("Syntax", "import_error"), ("NoExport", "no_export"), ("Helper", "import_error")):
        assert sample(samples, "celgate_agent_load_failures_total", agent=name, kind=kind) == 1
    assert sample(samples, "celgate_agent_load_failures_total", agent="Good", kind="import_error") is None

    listed = (await get_json(http, celgate.root + "/admin/agents"))["agents"]
    assert [a["name"] for a in listed] == ["Good", "labs/Nested"]
    good = listed[0]
    assert (good["kind"], good["model"], good["source"], good["stale"]) == (
        "agent",
        "fake-model",
        str(agents / "Good" / "agent.py"),
        False,
    )

    models = (await oai(celgate.url).models.list()).data
    owners = {m.id: m.owned_by for m in models}
    assert owners == {"fake-model": "fake", "Good": "celgate-agent", "labs/Nested": "celgate-agent"}

    upstream.push(Script(json=completion("I am nested.")))
    reply = await oai(celgate.url).chat.completions.create(
        model="labs/Nested", messages=[{"role": "user", "content": "Who?"}]
    )
    assert reply.choices[0].message.content == "I am nested." and reply.model == "labs/Nested"


# --- 5. watch mode on a live server -------------------------------------------------------------------

LIVE_AGENT = """\
    from pathlib import Path

    from pydantic import BaseModel

    from .helpers import reply

    with Path({imports!r}).open("a") as f:  # one line per import of this agent.py
        f.write("{name}\\n")


    class WorkflowInput(BaseModel):
        input_as_text: str


    async def run_workflow(workflow_input: WorkflowInput):
        return {{"output_text": reply(workflow_input.input_as_text)}}
"""
LIVE_HELPER = """\
    def reply(text):
        return "{version}: " + text
"""


async def test_watch_mode_reloads_adds_removes_and_keeps_the_last_good_version(
    upstream: FakeUpstream,
    start_celgate: StartCelgate,
    oai: OpenAIFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    agents, imports = tmp_path / "agents", tmp_path / "imports.log"
    for name in ("Live", "Other"):
        write_agent(
            agents,
            name,
            LIVE_AGENT.format(imports=str(imports), name=name),
            helpers_py=LIVE_HELPER.format(version="v1"),
        )
    celgate = await start_with_agents(start_celgate, upstream, agents, watch=True)
    client = oai(celgate.url)

    async def ask(model: str) -> str:
        reply = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        return reply.choices[0].message.content or ""

    async def replies(model: str, expected: str) -> bool:
        return await ask(model) == expected

    async def agent_names() -> list[str]:
        return [a["name"] for a in (await get_json(http, celgate.root + "/admin/agents"))["agents"]]

    async def agent_errors() -> list[dict[str, Any]]:
        return (await get_json(http, celgate.root + "/admin/agents/errors"))["errors"]

    assert await ask("Live") == "v1: hi"
    assert sorted(imports.read_text().split()) == ["Live", "Other"]

    # Editing a helper module reloads that agent, and only that one.
    (agents / "Live" / "helpers.py").write_text(textwrap.dedent(LIVE_HELPER.format(version="v2")))
    await eventually(lambda: replies("Live", "v2: hi"), "Live to serve the edited helper")
    assert sorted(imports.read_text().split()) == ["Live", "Live", "Other"]
    assert await ask("Other") == "v1: hi"

    # A new folder appears as a model.
    write_agent(
        agents,
        "Fresh",
        LIVE_AGENT.format(imports=str(imports), name="Fresh"),
        helpers_py=LIVE_HELPER.format(version="fresh"),
    )

    async def fresh_listed() -> bool:
        return any(m.id == "Fresh" and m.owned_by == "celgate-agent" for m in (await client.models.list()).data)

    await eventually(fresh_listed, "the new folder Fresh to be listed on /v1/models")
    assert await ask("Fresh") == "fresh: hi"

    # A deleted folder disappears: the name is an ordinary model again (the upstream's default echo).
    for path in sorted((agents / "Other").iterdir()):
        path.unlink()
    (agents / "Other").rmdir()

    async def other_gone() -> bool:
        return "Other" not in await agent_names()

    await eventually(other_gone, "Other to disappear")
    assert "Other" not in {m.id for m in (await client.models.list()).data}
    assert await ask("Other") == "Hello world" and upstream.requests[-1].body["model"] == "Other"

    # A broken edit keeps the previous version serving and records the error.
    (agents / "Live" / "helpers.py").write_text("def reply(text:\n")

    async def live_failed() -> bool:
        return [e["agent"] for e in await agent_errors()] == ["Live"]

    await eventually(live_failed, "the broken edit of Live to be recorded")
    [error] = await agent_errors()
    assert error["kind"] == "import_error" and "SyntaxError" in error["message"]
    assert await ask("Live") == "v2: hi"
    live = next(a for a in (await get_json(http, celgate.root + "/admin/agents"))["agents"] if a["name"] == "Live")
    assert live["stale"] is True
    samples = await scrape(http, celgate)
    assert sample(samples, "celgate_agent_load_failures_total", agent="Live", kind="import_error") == 1

    # Fixing it serves the new version and clears the error.
    (agents / "Live" / "helpers.py").write_text(textwrap.dedent(LIVE_HELPER.format(version="v3")))
    await eventually(lambda: replies("Live", "v3: hi"), "Live to serve the fixed helper")
    assert await agent_errors() == []
    assert sorted(await agent_names()) == ["Fresh", "Live"]
    assert all(not a["stale"] for a in (await get_json(http, celgate.root + "/admin/agents"))["agents"])


# --- 6. a client disconnect cancels the run -----------------------------------------------------------

CANCEL_AGENT = (
    EFFECTS_PRELUDE
    + """\
    import asyncio


    @function_tool
    def record_effect() -> str:
        \"\"\"Has a visible side effect.\"\"\"
        _record("record_effect ran")
        return "recorded"


    @function_tool
    async def slow_tool() -> str:
        \"\"\"Takes long; records whether it finished or was cancelled.\"\"\"
        _record("slow_tool started")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            _record("slow_tool cancelled")
            raise
        _record("slow_tool finished")
        return "done"


    agent = Agent(name="Canceller", instructions="Work.", tools=[record_effect, slow_tool])
"""
)
STREAM_BODY = {"model": "Canceller", "messages": [{"role": "user", "content": "Go"}], "stream": True}


async def read_until(response: aiohttp.ClientResponse, marker: bytes) -> bytes:
    received = b""
    async with asyncio.timeout(DEADLINE):
        while marker not in received:
            chunk = await response.content.readany()
            assert chunk, f"stream ended before {marker!r}: {received!r}"
            received += chunk
    return received


async def requests_with_status(http: aiohttp.ClientSession, celgate: Celgate, model: str, status: str) -> float:
    route = "/v1/chat/completions"
    return sample(await scrape(http, celgate), "celgate_requests_total", route=route, model=model, status=status) or 0


async def test_a_client_disconnect_mid_text_cancels_the_run_before_its_tool(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.log"
    write_agent(tmp_path / "agents", "Canceller", CANCEL_AGENT.format(effects=str(effects)))
    celgate = await start_with_agents(start_celgate, upstream, tmp_path / "agents")
    held = asyncio.Event()
    # The model streams some text, then (held back) a call of record_effect; a second turn would follow.
    tool_steps = tool_call_stream([("call_fx", "record_effect", "{}")])
    steps = [
        Step(sse(chat_chunk({"role": "assistant", "content": ""}))),
        Step(sse(chat_chunk({"content": "Let me check"}))),
        *tool_steps[1:2],
        Step(sse(chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]})), wait=held),
        *tool_steps[-3:],
    ]
    upstream.push(Script(steps=steps), Script(json=completion("second turn")))

    response = await http.post(celgate.url + "/chat/completions", json=STREAM_BODY)
    assert response.status == 200
    await read_until(response, b"Let me check")
    response.close()  # the client goes away while the upstream still holds the tool call

    await asyncio.wait_for(upstream.closed_early.wait(), DEADLINE)  # the agent's model stream was closed

    async def both_requests_ended_as_499() -> bool:
        return (
            await requests_with_status(http, celgate, "Canceller", "499") == 1
            and await requests_with_status(http, celgate, "fake-model", "499") == 1
        )

    await eventually(both_requests_ended_as_499, "the client's and the agent's requests to be recorded as 499")
    held.set()  # too late: nothing is listening any more
    assert not effects.exists()  # the tool never ran
    assert len(upstream.requests) == 1  # and there was no second turn
    assert sample(await scrape(http, celgate), "celgate_active_streams") == 0


async def test_a_client_disconnect_cancels_a_running_tool(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.log"
    write_agent(tmp_path / "agents", "Canceller", CANCEL_AGENT.format(effects=str(effects)))
    celgate = await start_with_agents(start_celgate, upstream, tmp_path / "agents")
    upstream.push(Script(steps=tool_call_stream([("call_slow", "slow_tool", "{}")])), Script(json=completion("x")))

    response = await http.post(celgate.url + "/chat/completions", json=STREAM_BODY)
    await read_until(response, b'"type":"tool_call"')

    async def tool_started() -> bool:
        return effects.exists() and "slow_tool started" in effects.read_text()

    await eventually(tool_started, "slow_tool to start")
    response.close()

    async def tool_cancelled() -> bool:
        return "slow_tool cancelled" in effects.read_text()

    await eventually(tool_cancelled, "slow_tool to be cancelled")
    assert effects.read_text().splitlines() == ["slow_tool started", "slow_tool cancelled"]
    assert len(upstream.requests) == 1

    async def recorded_as_499() -> bool:
        return await requests_with_status(http, celgate, "Canceller", "499") == 1

    await eventually(recorded_as_499, "the client's request to be recorded as 499")


async def test_a_client_disconnect_before_any_output_cancels_the_run(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.log"
    write_agent(tmp_path / "agents", "Canceller", CANCEL_AGENT.format(effects=str(effects)))
    celgate = await start_with_agents(start_celgate, upstream, tmp_path / "agents")
    held = asyncio.Event()
    steps = tool_call_stream([("call_fx", "record_effect", "{}")])
    steps[0].wait = held  # the model's answer (a call of record_effect) has not begun
    upstream.push(Script(steps=steps), Script(json=completion("second turn")))

    request = asyncio.create_task(http.post(celgate.url + "/chat/completions", json=STREAM_BODY))

    async def model_called() -> bool:
        return len(upstream.requests) == 1

    await eventually(model_called, "the agent's model call")
    request.cancel()  # celgate has sent nothing yet (no response headers either)
    await asyncio.gather(request, return_exceptions=True)
    await asyncio.wait_for(upstream.closed_early.wait(), DEADLINE)

    async def recorded_as_499() -> bool:
        return await requests_with_status(http, celgate, "Canceller", "499") == 1

    await eventually(recorded_as_499, "the client's request to be recorded as 499")
    held.set()
    assert not effects.exists() and len(upstream.requests) == 1


async def test_a_client_disconnect_cancels_a_non_streamed_run_and_its_tool(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.log"
    write_agent(tmp_path / "agents", "Canceller", CANCEL_AGENT.format(effects=str(effects)))
    celgate = await start_with_agents(start_celgate, upstream, tmp_path / "agents")
    upstream.push(Script(json=completion(None, [("call_slow", "slow_tool", "{}")])), Script(json=completion("x")))

    request = asyncio.create_task(http.post(celgate.url + "/chat/completions", json={**STREAM_BODY, "stream": False}))

    async def tool_started() -> bool:
        return effects.exists() and "slow_tool started" in effects.read_text()

    await eventually(tool_started, "slow_tool to start")
    request.cancel()
    await asyncio.gather(request, return_exceptions=True)

    async def tool_cancelled() -> bool:
        return "slow_tool cancelled" in effects.read_text()

    await eventually(tool_cancelled, "slow_tool to be cancelled")
    assert effects.read_text().splitlines() == ["slow_tool started", "slow_tool cancelled"]
    assert len(upstream.requests) == 1


# --- 7. request policy by agent name; run errors as OpenAI errors --------------------------------------

GATED_POLICY = """\
    version: 1
    defaults:
      decision: allow
    rules:
      - name: no-secret-agents
        on: request
        agents: ["Secret*"]
        effect: deny
        reason: secret agents are off limits
      - name: no-forbidden-models
        on: request
        models: ["forbidden-*"]
        effect: deny
        reason: not this model
"""
LOOPING_AGENT = """\
    from agents import Agent, function_tool

    __celgate__ = {"max_turns": 2}


    @function_tool
    def again() -> str:
        \"\"\"Call me again.\"\"\"
        return "call again"


    agent = Agent(name="Looper", instructions="Loop.", tools=[again])
"""
FORBIDDEN_AGENT = """\
    from agents import Agent

    __celgate__ = {"model": "forbidden-model"}

    agent = Agent(name="Forbidden", instructions="Hi.")
"""


@pytest.fixture
async def gated(upstream: FakeUpstream, start_celgate: StartCelgate, tmp_path: Path) -> Celgate:
    agents = tmp_path / "agents"
    write_agent(agents, "SecretAgent", PLAIN_AGENT.format(name="SecretAgent"))
    write_agent(agents, "Looper", LOOPING_AGENT)
    write_agent(agents, "Forbidden", FORBIDDEN_AGENT)
    write_agent(agents, "Open", PLAIN_AGENT.format(name="Open"))
    return await start_with_agents(
        start_celgate, upstream, agents, no_policy=False, policies=write_policy(tmp_path, GATED_POLICY)
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_the_request_policy_applies_to_agents_by_name(
    gated: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, stream: bool
) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        await oai(gated.url).chat.completions.create(
            model="SecretAgent", messages=[{"role": "user", "content": "Hi"}], stream=stream
        )
    error = assert_openai_error({"error": info.value.body}, type_="policy_denied", code="policy_denied")
    assert "secret agents are off limits" in error["message"] and "no-secret-agents" in error["message"]
    assert upstream.requests == []  # the agent never ran
    upstream.push(Script(json=completion("open")))
    reply = await oai(gated.url).chat.completions.create(model="Open", messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content == "open"


@pytest.mark.parametrize("stream", [False, True])
async def test_max_turns_exceeded_is_a_500_agent_error(
    gated: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, stream: bool
) -> None:
    again = [("call_again", "again", "{}")]
    if stream:
        upstream.push(*(Script(steps=tool_call_stream(again)) for _ in range(2)))
    else:
        upstream.push(*(Script(json=completion(None, again)) for _ in range(2)))
    body = {"model": "Looper", "messages": [{"role": "user", "content": "Hi"}], "stream": stream}
    async with http.post(gated.url + "/chat/completions", json=body) as response:
        raw = await response.read()
    assert len(upstream.requests) == 2
    if not stream:
        assert response.status == 500
        error = assert_openai_error(json.loads(raw), type_="agent_error", code="max_turns_exceeded")
    else:
        # Tool events went out first, so the failure arrives in-band, and the stream has no [DONE].
        assert response.status == 200
        assert b"data: [DONE]" not in raw
        last = raw.decode().strip().split("\n\n")[-1]
        assert last.startswith("event: error\ndata: ")
        error = assert_openai_error(
            json.loads(last.split("data: ", 1)[1]), type_="agent_error", code="max_turns_exceeded"
        )
    assert "max_turns=2" in error["message"]


async def test_max_turns_exceeded_through_the_openai_client(
    gated: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    upstream.push(*(Script(json=completion(None, [("c", "again", "{}")])) for _ in range(2)))
    with pytest.raises(openai.InternalServerError) as info:
        await oai(gated.url).chat.completions.create(model="Looper", messages=[{"role": "user", "content": "Hi"}])
    assert info.value.status_code == 500 and info.value.code == "max_turns_exceeded"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_denied_model_call_of_the_agent_is_a_403_before_any_stream_bytes(
    gated: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, stream: bool
) -> None:
    body = {"model": "Forbidden", "messages": [{"role": "user", "content": "Hi"}], "stream": stream}
    async with http.post(gated.url + "/chat/completions", json=body) as response:
        assert response.status == 403
        assert response.content_type == "application/json"
        error = assert_openai_error(await response.json(), type_="policy_denied", code="policy_denied")
    assert "no-forbidden-models" in error["message"] and "not this model" in error["message"]
    assert upstream.requests == []


PROPOSAL_POLICY = """\
    version: 1
    defaults:
      decision: allow
    rules:
      - name: never-propose-danger    # the model's proposal itself fails its response (upstream point)
        on: tool_call
        tools: ["danger_tool"]
        when: tool.source == "upstream"
        effect: deny
        action: error
        reason: the model may not even propose it
"""


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_call_failing_the_agents_model_response_is_a_403_either_way(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession, tmp_path: Path, stream: bool
) -> None:
    """`action: error` at the upstream point: a 403 on a JSON reply, an in-band error event on a stream.

    The agent's model calls are streamed exactly when the client's request is, so both shapes must come
    out as the same 403 (not a 500 ``agent_failed``); the tool never runs.
    """
    effects = tmp_path / "effects.log"
    write_agent(tmp_path / "agents", "Toolbox", TOOLBOX_AGENT.format(effects=str(effects)))
    celgate = await start_with_agents(
        start_celgate, upstream, tmp_path / "agents", no_policy=False, policies=write_policy(tmp_path, PROPOSAL_POLICY)
    )
    danger = [THREE_CALLS[1]]
    upstream.push(Script(steps=tool_call_stream(danger)) if stream else Script(json=completion(None, danger)))
    body = {"model": "Toolbox", "messages": [{"role": "user", "content": "Go"}], "stream": stream}
    async with http.post(celgate.url + "/chat/completions", json=body) as response:
        assert response.status == 403
        error = assert_openai_error(await response.json(), type_="policy_denied", code="policy_denied")
    assert "never-propose-danger" in error["message"] and "may not even propose it" in error["message"]
    assert not effects.exists() and len(upstream.requests) == 1


# --- 8. `import agents` from the repo root ------------------------------------------------------------
# Covered by tests/adapters/test_discovery.py::test_the_agents_folder_does_not_shadow_the_sdk (a subprocess
# run from the repository root, where ./agents exists, imports the SDK); not repeated here.


# --- 9. the shipped examples through celgate with --upstream demo ---------------------------------------


def celgate_events(chunks: list[Any]) -> list[dict[str, Any]]:
    return [c.model_extra["celgate"] for c in chunks if (c.model_extra or {}).get("celgate")]


def content(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def test_the_weather_example_answers_with_its_tool(demo: Celgate, oai: OpenAIFactory) -> None:
    client = oai(demo.url)
    owners = {m.id: m.owned_by for m in (await client.models.list()).data}
    assert owners == {
        "demo": "celgate-demo",
        "OrderDesk": "celgate-agent",
        "TriageWorkflow": "celgate-agent",
        "WeatherAgent": "celgate-agent",
    }

    stream = await client.chat.completions.create(
        model="WeatherAgent",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    call, result = celgate_events(chunks)
    assert (call["type"], call["name"], json.loads(call["arguments"]), call["agent"]) == (
        "tool_call",
        "get_weather",
        {"location": "Paris"},
        "WeatherAgent",
    )
    assert result == {
        "type": "tool_result",
        "id": call["id"],
        "name": "get_weather",
        "output": "Paris: 21.0 C, sunny",
        "agent": "WeatherAgent",
    }
    assert content(chunks) == "Here is what the tool returned: Paris: 21.0 C, sunny"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0

    reply = await client.chat.completions.create(
        model="WeatherAgent", messages=[{"role": "user", "content": "What is the weather in Tokyo?"}]
    )
    assert reply.choices[0].message.content == "Here is what the tool returned: Tokyo: 26.0 C, humid"


async def test_the_triage_example_hands_off_to_billing_and_refunds(
    demo: Celgate, oai: OpenAIFactory, http: aiohttp.ClientSession
) -> None:
    stream = await oai(demo.url).chat.completions.create(
        model="TriageWorkflow",
        messages=[{"role": "user", "content": "Please refund INV-1001, it was wrong."}],
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    handoff, call, result = celgate_events(chunks)
    assert handoff == {"type": "handoff", "from": "Triage", "to": "Billing"}
    assert (call["name"], json.loads(call["arguments"]), call["agent"]) == (
        "issue_refund",
        {"invoice_id": "INV-1001", "amount_eur": 21.0},
        "Billing",
    )
    assert result["output"] == "Refunded 21.00 EUR on INV-1001."
    assert content(chunks) == "Here is what the tool returned: Refunded 21.00 EUR on INV-1001."
    samples = await scrape(http, demo)
    # small-refunds allowed it at the upstream point and at the agent point; it ran once.
    assert sample(samples, "celgate_tool_calls_total", tool="issue_refund", decision="allow", source="upstream") == 1
    assert sample(samples, "celgate_tool_calls_total", tool="issue_refund", decision="allow", source="agent") == 1
    assert sample(samples, "celgate_tool_duration_seconds_count", tool="issue_refund") == 1


async def test_the_declarative_order_desk_example_uses_gateway_and_mcp_tools_on_the_demo(
    demo: Celgate, oai: OpenAIFactory, http: aiohttp.ClientSession
) -> None:
    stream = await oai(demo.url).chat.completions.create(
        model="OrderDesk", messages=[{"role": "user", "content": "Where is order 1001?"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    call, result = celgate_events(chunks)
    assert (call["name"], json.loads(call["arguments"]), call["agent"]) == (
        "lookup_order",
        {"order_id": "1001"},
        "OrderDesk",
    )
    assert result["output"] == "Order 1001: shipped, via DHL (2 items)."
    assert content(chunks) == "Here is what the tool returned: Order 1001: shipped, via DHL (2 items)."

    reply = await oai(demo.url).chat.completions.create(
        model="OrderDesk", messages=[{"role": "user", "content": "Search the docs: what is the returns policy?"}]
    )
    assert reply.choices[0].message.content == (
        "Here is what the tool returned: Returns are free within 30 days of delivery; "
        "refunds reach the card in 5 working days."
    )
    samples = await scrape(http, demo)
    assert sample(samples, "celgate_tool_calls_total", tool="docs_search", decision="allow", source="mcp") == 1
    assert sample(samples, "celgate_tool_calls_total", tool="lookup_order", decision="allow", source="gateway") == 1
    async with http.get(demo.root + "/admin/tools") as response:
        listed = {t["name"] for t in (await response.json())["tools"]}
    assert listed == {"docs_publish", "docs_search", "gateway_health", "lookup_order"}


async def test_a_model_named_like_a_broken_agent_is_a_503_not_a_trip_upstream(
    start_celgate: StartCelgate,
    upstream: FakeUpstream,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    folder = tmp_path / "agents" / "BrokenAgent"
    folder.mkdir(parents=True)
    (folder / "agent.py").write_text("this is not python\n")
    celgate = await start_celgate(upstream=upstream.base_url, agents=tmp_path / "agents", agents_model="fake-model")
    async with http.post(
        celgate.url + "/chat/completions",
        json={"model": "BrokenAgent", "messages": [{"role": "user", "content": "hi"}]},
    ) as r:
        body = await r.json()
    assert r.status == 503
    assert body["error"]["code"] == "agent_unavailable" and "BrokenAgent" in body["error"]["message"]
    assert upstream.requests == []


async def test_models_lists_only_the_agents_the_caller_may_use(
    start_celgate: StartCelgate,
    upstream: FakeUpstream,
    tmp_path: Path,
    oai: OpenAIFactory,
) -> None:
    for name in ("PublicAgent", "SecretAgent"):
        write_agent(tmp_path / "agents", name, f"from agents import Agent\n\nagent = Agent(name={name!r})\n")
    policies = write_policy(
        tmp_path,
        """\
        version: 1
        defaults: {decision: allow}
        rules:
          - {name: no-secrets, on: request, agents: ["Secret*"], effect: deny, reason: secret}
        """,
        "p.yaml",
    )
    celgate = await start_celgate(
        upstream=upstream.base_url,
        agents=tmp_path / "agents",
        agents_model="fake-model",
        no_policy=False,
        policies=policies,
    )
    listed = [m.id for m in (await oai(celgate.url).models.list()).data]
    assert "PublicAgent" in listed and "SecretAgent" not in listed


async def test_an_agents_own_upstream_gets_its_model_calls_through_celgate(
    upstream: FakeUpstream, start_celgate: StartCelgate, oai: OpenAIFactory, tmp_path: Path
) -> None:
    other = FakeUpstream()
    await other.start()
    try:
        write_agent(
            tmp_path / "agents",
            "ElsewhereAgent",
            f"""\
            from agents import Agent

            __celgate__ = {{"upstream": "{other.base_url}"}}
            agent = Agent(name="ElsewhereAgent", instructions="Be brief.")
        """,
        )
        celgate = await start_with_agents(start_celgate, upstream, tmp_path / "agents")
        other.push(Script(json=completion("from the other upstream")))
        reply = await oai(celgate.url).chat.completions.create(
            model="ElsewhereAgent", messages=[{"role": "user", "content": "hi"}]
        )
    finally:
        await other.close()
    assert reply.choices[0].message.content == "from the other upstream"
    assert [r.path for r in other.requests] == ["/v1/chat/completions"]
    assert upstream.requests == []  # celgate's own upstream never saw it
    assert not {"x-celgate-internal", "x-celgate-upstream"} & {k.lower() for k in other.requests[0].headers}


# --- event-loop health: a blocking tool ---------------------------------------------------------------

SLEEPY_AGENT = """\
    import time
    from pathlib import Path

    from agents import Agent, function_tool


    @function_tool
    def nap() -> str:
        \"\"\"A plain def tool that blocks: the SDK runs it in a thread.\"\"\"
        Path({started!r}).touch()
        time.sleep(1.0)
        return "rested"


    @function_tool
    async def hog() -> str:
        \"\"\"An async tool that blocks anyway: it stalls the event loop.\"\"\"
        time.sleep(0.6)
        return "hogged"


    agent = Agent(name="Sleepy", instructions="Rest.", tools=[nap, hog])
"""


def lag_samples_over(samples: Samples, seconds: str) -> float:
    """How many event-loop lag samples exceeded ``seconds`` (a bucket bound)."""
    within = sample(samples, "celgate_event_loop_lag_seconds_bucket", le=seconds)
    total = sample(samples, "celgate_event_loop_lag_seconds_count")
    assert within is not None and total is not None and total > 0
    return total - within


async def test_a_blocking_sync_tool_does_not_stall_other_traffic(
    upstream: FakeUpstream, start_celgate: StartCelgate, oai: OpenAIFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    started = tmp_path / "nap-started"
    write_agent(tmp_path / "agents", "Sleepy", SLEEPY_AGENT.format(started=str(started)))
    celgate = await start_with_agents(start_celgate, upstream, tmp_path / "agents")
    upstream.push(Script(json=completion(None, [("call_nap", "nap", "{}")])), Script(json=completion("Rested.")))
    run = asyncio.create_task(
        oai(celgate.url).chat.completions.create(model="Sleepy", messages=[{"role": "user", "content": "rest"}])
    )

    await eventually(started.exists, "the tool to start")
    began = time.monotonic()
    async with http.get(celgate.root + "/healthz") as response:
        assert response.status == 200
    assert time.monotonic() - began < 0.5 and not run.done()  # answered while the 1 s tool still sleeps
    reply = await run
    assert reply.choices[0].message.content == "Rested."
    assert lag_samples_over(await scrape(http, celgate), "0.5") == 0


async def test_the_loop_lag_metric_shows_a_tool_that_blocks_the_loop(
    upstream: FakeUpstream, start_celgate: StartCelgate, oai: OpenAIFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    write_agent(tmp_path / "agents", "Sleepy", SLEEPY_AGENT.format(started=str(tmp_path / "unused")))
    celgate = await start_with_agents(start_celgate, upstream, tmp_path / "agents")
    upstream.push(Script(json=completion(None, [("call_hog", "hog", "{}")])), Script(json=completion("Done.")))
    await oai(celgate.url).chat.completions.create(model="Sleepy", messages=[{"role": "user", "content": "hog"}])
    await asyncio.sleep(0.3)  # the sampler's next period records the stall
    assert lag_samples_over(await scrape(http, celgate), "0.25") >= 1
