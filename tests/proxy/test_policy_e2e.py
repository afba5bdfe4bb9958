"""Policy enforcement through the live proxy, end to end, with the real ``openai`` client.

Covers what ``test_policy_hooks.py`` does not: hot reload on a running server
(edit, break, fix), the per-request policy snapshot, stream interception with
argument-reading rules, the shared benchmark policy, the audit log, failing
closed on CEL runtime errors, ``--no-policy``, and the ``x-celgate-agent``
header.

Hot reload waits on conditions (``/admin/policies`` polled every 50 ms, up to
10 s), never on fixed sleeps; the watcher's debounce is shortened to 50 ms.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from celgate.policy import PolicyLoadError, PolicyStore
from celgate.proxy import create_app
from celgate.proxy.keys import GATEWAY_TOKEN
from celgate.proxy.settings import Settings, SettingsError
from tests.helpers import REPO, Celgate, OpenAIFactory, StartCelgate, assert_openai_error, replace, write_policy
from tests.helpers.fakeupstream import FakeUpstream, Script, Step, chat_chunk, completion, sse, tool_call_stream
from tests.helpers.observe import get_json, labelled, metric, policies_status, scrape, wait_for_status

MESSAGES = [{"role": "user", "content": "Hi"}]
BENCH_POLICY = REPO / "tests" / "policy" / "corpus" / "bench" / "bench.yaml"
POLL_SECONDS = 0.05
WAIT_SECONDS = 10.0

WEATHER_ARGS = '{"location": "Oslo", "unit": "celsius"}'
WEATHER = ("call_w", "get_weather", WEATHER_ARGS)
SHELL = ("call_s", "shell.exec", '{"cmd": "rm -rf /"}')


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def fast_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The policy watcher with a 50 ms debounce instead of 1600 ms (the proxy has no knob for it)."""
    monkeypatch.setattr(PolicyStore, "watch", functools.partialmethod(PolicyStore.watch, debounce_ms=50))


async def arm_watcher(http: aiohttp.ClientSession, gate: Celgate, path: Path) -> dict[str, Any]:
    """Wait until the watcher sees changes: re-save the unchanged file until a reload is counted.

    The watcher task starts with the app but arms its file watch a moment later;
    an edit made before that would be missed. Re-saving identical content is a
    no-op reload (same version).
    """
    text = path.read_text()
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            replace(path, text)
            for _ in range(6):
                status = await policies_status(http, gate)
                if status["reloads"]["ok"] >= 1:
                    return status
                await asyncio.sleep(POLL_SECONDS)


Watched = Callable[[str], Awaitable[tuple[Celgate, Path, str]]]


@pytest.fixture
def watched(
    fast_watch: None, upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession, tmp_path: Path
) -> Watched:
    """``await watched(text)``: a celgate watching its policy file (written with ``text``), the watcher armed.

    Gives the celgate, the policy file to edit, and the version it started with.
    """

    async def start(text: str) -> tuple[Celgate, Path, str]:
        path = write_policy(tmp_path, text) / "policy.yaml"
        gate = await start_celgate(upstream=upstream.base_url, policies=path.parent, no_policy=False, watch=True)
        return gate, path, (await arm_watcher(http, gate, path))["active"]["version"]

    return start


def reassemble(chunks: list[Any]) -> tuple[dict[int, dict[str, str]], list[str], str]:
    """What a client rebuilds from ``openai`` stream chunks: tool calls by index, finish reasons, content."""
    calls: dict[int, dict[str, str]] = {}
    finishes: list[str] = []
    content = ""
    for chunk in chunks:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                if delta.function is not None:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
    return calls, finishes, content


async def stream_chunks(client: openai.AsyncOpenAI, **kwargs: Any) -> list[Any]:
    stream = await client.chat.completions.create(messages=MESSAGES, stream=True, **kwargs)
    return [chunk async for chunk in stream]


async def denied(call: Awaitable[Any]) -> dict[str, Any]:
    """Await an ``openai`` call that must fail with a policy 403; return the error object."""
    with pytest.raises(openai.PermissionDeniedError) as info:
        await call
    assert info.value.status_code == 403
    return assert_openai_error({"error": info.value.body}, type_="policy_denied", code="policy_denied")


async def read_events(response: aiohttp.ClientResponse, until: bytes) -> bytes:
    """Read whole SSE events from a raw response until one contains ``until``."""
    seen = b""
    while until not in seen:
        event = await response.content.readuntil(b"\n\n")
        assert event, f"stream ended before {until!r}; got {seen!r}"
        seen += event
    return seen


# --------------------------------------------------------------------------- 1. hot reload

RELOAD_V1 = """\
version: 1
defaults:
  decision: deny
rules:
  - name: known-models
    on: request
    models: ["gpt-4o*"]
    effect: allow
"""
RELOAD_V2 = (
    RELOAD_V1
    + """\
  - name: retire-gpt-4o
    on: request
    models: ["gpt-4o"]
    effect: deny
    reason: gpt-4o is retired
"""
)
BROKEN_YAML = (
    RELOAD_V2
    + """\
  - name: half-typed
    on: [request
"""
)
BROKEN_CEL = (
    RELOAD_V2
    + """\
  - name: short-models-only
    on: request
    when: size(request.model) > "10"
    effect: deny
"""
)
RELOAD_FIXED = (
    RELOAD_V1
    + """\
  - name: retire-gpt-4o-mini
    on: request
    models: ["gpt-4o-mini"]
    effect: deny
    reason: gpt-4o-mini is retired
"""
)


async def test_hot_reload_edit_break_fix_on_a_live_server(
    watched: Watched, upstream: FakeUpstream, oai: OpenAIFactory, http: aiohttp.ClientSession
) -> None:
    gate, path, v1 = await watched(RELOAD_V1)
    client = oai(gate.url)

    answer = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert answer.choices[0].message.content == "Hello world"

    # A good edit: the next request sees the new rule.
    replace(path, RELOAD_V2)
    status = await wait_for_status(http, gate, lambda s: s["active"]["version"] != v1)
    v2 = status["active"]["version"]
    assert status["last_error"] is None and status["active"]["rule_count"] == 2
    sent = len(upstream.requests)
    error = await denied(client.chat.completions.create(model="gpt-4o", messages=MESSAGES))
    assert "retire-gpt-4o" in error["message"] and "gpt-4o is retired" in error["message"]
    assert len(upstream.requests) == sent  # nothing went upstream

    # A YAML syntax error: the last good set stays active.
    replace(path, BROKEN_YAML)
    status = await wait_for_status(http, gate, lambda s: s["reloads"]["error"] >= 1)
    assert status["active"]["version"] == v2
    problem = status["last_error"]["problems"][0]
    assert set(problem) == {"file", "line", "rule", "message"}
    assert problem["file"].endswith("policy.yaml") and isinstance(problem["line"], int) and problem["line"] > 0
    assert "YAML" in problem["message"]
    assert status["last_error"]["at"] and status["last_error"]["message"]
    error = await denied(client.chat.completions.create(model="gpt-4o", messages=MESSAGES))
    assert "retire-gpt-4o" in error["message"]

    # A CEL type error: still the last good set, and the error names file, line, rule and position.
    replace(path, BROKEN_CEL)
    status = await wait_for_status(
        http,
        gate,
        lambda s: s["last_error"] is not None and s["last_error"]["problems"][0]["rule"] == "short-models-only",
    )
    assert status["active"]["version"] == v2
    problem = status["last_error"]["problems"][0]
    when_line = BROKEN_CEL.splitlines().index('    when: size(request.model) > "10"') + 1
    assert problem["file"].endswith("policy.yaml") and problem["line"] == when_line
    assert "when at 1:" in problem["message"] and "overload" in problem["message"]
    error = await denied(client.chat.completions.create(model="gpt-4o", messages=MESSAGES))
    assert "retire-gpt-4o" in error["message"]
    samples = await scrape(http, gate)
    assert metric(samples, "celgate_policy_reloads_total", result="error") >= 2
    assert labelled(samples, "celgate_policy_info") == {frozenset({("version", v2)}): 1.0}
    ok_before_fix = metric(samples, "celgate_policy_reloads_total", result="ok")
    assert ok_before_fix >= 2

    # The fix: the new rule applies, the error is cleared, the version moves on.
    replace(path, RELOAD_FIXED)
    status = await wait_for_status(http, gate, lambda s: s["active"]["version"] not in (v1, v2))
    v3 = status["active"]["version"]
    assert status["last_error"] is None
    assert status["reloads"]["ok"] >= 3 and status["reloads"]["error"] >= 2
    answer = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert answer.choices[0].message.content == "Hello world"
    error = await denied(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    assert "retire-gpt-4o-mini" in error["message"] and "gpt-4o-mini is retired" in error["message"]
    samples = await scrape(http, gate)
    assert metric(samples, "celgate_policy_reloads_total", result="ok") > ok_before_fix
    assert labelled(samples, "celgate_policy_info") == {frozenset({("version", v3)}): 1.0}


# --------------------------------------------------------------------------- 2. in-flight snapshot

SNAPSHOT_V1 = """\
version: 1
defaults:
  decision: deny
rules:
  - name: any-model
    on: request
    effect: allow
  - name: weather-in-sane-units
    on: tool_call
    tools: ["get_weather"]
    when: tool.arguments.unit in ["celsius", "fahrenheit"]
    effect: allow
"""
SNAPSHOT_V2 = (
    SNAPSHOT_V1
    + """\
  - name: no-weather
    on: tool_call
    tools: ["get_weather"]
    effect: deny
    reason: weather is off
"""
)


async def test_a_request_in_flight_finishes_on_the_policy_it_started_with(
    watched: Watched, upstream: FakeUpstream, oai: OpenAIFactory, http: aiohttp.ClientSession
) -> None:
    """Observed: the held call is decided after the swap, by the old set (the request's snapshot)."""
    gate, path, v1 = await watched(SNAPSHOT_V1)
    client = oai(gate.url)

    resume = asyncio.Event()
    steps = tool_call_stream([WEATHER], pieces=3)
    steps[3].wait = resume  # [role, head, args 1/3, >args 2/3<, ...]: the call is held mid-arguments
    upstream.push(Script(steps=steps), Script(json=completion(None, tool_calls=[WEATHER])))
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    first = await anext(aiter(stream))  # the role chunk: the request is running, its snapshot taken
    assert first.choices[0].delta.role == "assistant"

    replace(path, SNAPSHOT_V2)
    await wait_for_status(http, gate, lambda s: s["active"]["version"] != v1)
    fresh = await client.chat.completions.create(model="m", messages=MESSAGES)  # a new request: the new set
    assert fresh.choices[0].message.tool_calls is None and "weather is off" in (fresh.choices[0].message.content or "")

    resume.set()
    calls, finishes, content = reassemble([first, *[chunk async for chunk in stream]])
    assert calls == {0: {"id": "call_w", "name": "get_weather", "arguments": WEATHER_ARGS}}
    assert finishes == ["tool_calls"] and content == ""
    samples = await scrape(http, gate)
    decisions = labelled(samples, "celgate_policy_decisions_total")
    tool_decisions = {
        dict(labels)["rule"]: value for labels, value in decisions.items() if dict(labels)["point"] == "tool_call"
    }
    assert tool_decisions == {"weather-in-sane-units": 1.0, "no-weather": 1.0}


# --------------------------------------------------------------------------- 3. stream interception

INTERCEPT_POLICY = (
    SNAPSHOT_V1
    + """\
  - name: no-shell
    on: tool_call
    tools: ["shell*"]
    effect: deny
    reason: no shells
"""
)


@pytest.fixture
async def intercepting(upstream: FakeUpstream, start_celgate: StartCelgate, tmp_path: Path) -> Celgate:
    directory = write_policy(tmp_path, INTERCEPT_POLICY)
    return await start_celgate(upstream=upstream.base_url, policies=directory, no_policy=False)


@pytest.mark.parametrize("order", [[WEATHER, SHELL], [SHELL, WEATHER]], ids=["allowed-first", "denied-first"])
async def test_two_parallel_calls_the_client_sees_only_the_allowed_one_byte_identical(
    order: list[tuple[str, str, str]], intercepting: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    upstream.push(Script(steps=tool_call_stream(order, pieces=4)))
    chunks = await stream_chunks(oai(intercepting.url), model="m", stream_options={"include_usage": True})
    calls, finishes, content = reassemble(chunks)
    assert calls == {0: {"id": "call_w", "name": "get_weather", "arguments": WEATHER_ARGS}}  # no index gap
    assert finishes == ["tool_calls"] and content == ""
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 14


async def test_the_openai_stream_helper_rebuilds_the_allowed_call(
    intercepting: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    upstream.push(Script(steps=tool_call_stream([WEATHER, SHELL])))
    async with oai(intercepting.url).chat.completions.stream(model="m", messages=MESSAGES) as stream:
        final = await stream.get_final_completion()
    message = final.choices[0].message
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []] == [WEATHER]


async def test_the_openai_stream_helper_when_the_first_call_is_stripped(
    intercepting: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    upstream.push(Script(steps=tool_call_stream([SHELL, WEATHER])))
    async with oai(intercepting.url).chat.completions.stream(model="m", messages=MESSAGES) as stream:
        final = await stream.get_final_completion()
    assert [c.function.name for c in final.choices[0].message.tool_calls or []] == ["get_weather"]


@pytest.mark.parametrize(
    "arguments", ['{"location": "Oslo", "unit": "kelvin"}', '{"location": "Oslo"}'], ids=["rule-false", "rule-errors"]
)
async def test_a_denied_only_call_after_its_arguments_ends_with_stop_and_the_message(
    arguments: str, intercepting: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    upstream.push(Script(steps=tool_call_stream([("call_k", "get_weather", arguments)])))
    chunks = await stream_chunks(oai(intercepting.url), model="m", stream_options={"include_usage": True})
    calls, finishes, content = reassemble(chunks)
    assert calls == {} and finishes == ["stop"]
    assert content == "celgate: get_weather denied by policy (default): no rule allows it"
    assert chunks[-1].usage is not None


async def test_content_is_not_delayed_by_a_held_call(
    intercepting: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    """The upstream pauses inside the call's arguments; content sent around the call reaches the client first."""
    resume = asyncio.Event()
    role = sse(chat_chunk({"role": "assistant", "content": "", "refusal": None}))
    before = sse(chat_chunk({"content": "Let me check. "}))
    head = sse(
        chat_chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_w",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        )
    )
    args1 = sse(chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"location": "Oslo", '}}]}))
    during = sse(chat_chunk({"content": "One moment."}))
    args2 = sse(chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"unit": "celsius"}'}}]}))
    finish = sse(chat_chunk({}, "tool_calls"))
    done = b"data: [DONE]\n\n"
    upstream.push(
        Script(
            steps=[
                Step(role),
                Step(before),
                Step(head),
                Step(args1),
                Step(during),
                Step(args2, wait=resume),
                Step(finish),
                Step(done),
            ]
        )
    )
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    async with http.post(intercepting.url + "/chat/completions", json=body) as response:
        assert response.status == 200
        async with asyncio.timeout(WAIT_SECONDS):  # a deadlock guard: the upstream waits for us
            early = await read_events(response, b"One moment.")
        assert early == role + before + during  # both content deltas; the call is still held
        resume.set()
        rest = await response.read()
    assert early + rest == role + before + during + head + args1 + args2 + finish + done


# --------------------------------------------------------------------------- 4. the shared bench policy

BENCH_CALL = '{"location": "Paris, FR", "unit": "celsius"}'


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bench-policies"
    directory.mkdir()
    shutil.copy(BENCH_POLICY, directory / "bench.yaml")
    return directory


@pytest.fixture
async def bench(
    upstream: FakeUpstream, start_celgate: StartCelgate, bench_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Celgate:
    monkeypatch.setenv("CELGATE_BENCH_BATCH_KEY", "sk-bench-batch")
    return await start_celgate(upstream=upstream.base_url, policies=bench_dir, no_policy=False)


async def test_bench_requests_stream_and_non_stream_are_allowed(
    bench: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, http: aiohttp.ClientSession
) -> None:
    client = oai(bench.url, api_key="sk-bench")
    answer = await client.chat.completions.create(model="bench-mock", messages=MESSAGES)
    assert answer.choices[0].message.content == "Hello world"
    chunks = await stream_chunks(client, model="bench-mock")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello world"
    answer = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert answer.choices[0].message.content == "Hello world"
    assert [r.body["model"] for r in upstream.requests] == ["bench-mock", "bench-mock", "gpt-4o"]
    samples = await scrape(http, bench)
    assert (
        metric(samples, "celgate_policy_decisions_total", point="request", effect="allow", rule="search-team-models")
        == 3
    )
    assert metric(samples, "celgate_policy_eval_seconds_count") == 3


async def test_bench_weather_call_passes_intact(
    bench: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, http: aiohttp.ClientSession
) -> None:
    call = ("call_bench", "get_weather", BENCH_CALL)
    upstream.push(Script(steps=tool_call_stream([call])))
    chunks = await stream_chunks(oai(bench.url, api_key="sk-bench"), model="bench-mock")
    calls, finishes, _ = reassemble(chunks)
    assert calls == {0: {"id": "call_bench", "name": "get_weather", "arguments": BENCH_CALL}}
    assert finishes == ["tool_calls"]

    steps = tool_call_stream([call])
    upstream.push(Script(steps=steps))
    async with http.post(
        bench.url + "/chat/completions",
        headers={"Authorization": "Bearer sk-bench"},
        json={"model": "bench-mock", "messages": MESSAGES, "stream": True},
    ) as response:
        assert await response.read() == b"".join(s.data for s in steps)  # byte-identical


async def test_bench_weather_call_in_kelvin_is_stripped(
    bench: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    upstream.push(
        Script(steps=tool_call_stream([("call_k", "get_weather", '{"location": "Paris, FR", "unit": "kelvin"}')]))
    )
    chunks = await stream_chunks(oai(bench.url, api_key="sk-bench"), model="bench-mock")
    calls, finishes, content = reassemble(chunks)
    assert calls == {} and finishes == ["stop"]
    assert content == "celgate: get_weather denied by policy (default): no rule allows it"


async def test_bench_unknown_model_and_unknown_key_are_denied_by_default(
    bench: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    error = await denied(oai(bench.url, api_key="sk-bench").chat.completions.create(model="llama-3", messages=MESSAGES))
    assert error["message"] == "celgate: llama-3 denied by policy (default): no rule allows it"
    error = await denied(
        oai(bench.url, api_key="sk-someone").chat.completions.create(model="bench-mock", messages=MESSAGES)
    )
    # anonymous: denied by default, or (outside 08-18 UTC) first by the interns' office-hours rule
    assert "(default)" in error["message"] or "(office-hours-only-for-interns)" in error["message"]
    assert upstream.requests == []


async def test_bench_free_tier_may_not_stream(bench: Celgate, upstream: FakeUpstream, oai: OpenAIFactory) -> None:
    client = oai(bench.url, api_key="sk-bench-batch")  # CELGATE_BENCH_BATCH_KEY: principal batch-jobs
    answer = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert answer.choices[0].message.content == "Hello world"
    error = await denied(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert "no-streaming-on-free-tier" in error["message"] and "streaming needs the pro tier" in error["message"]
    assert len(upstream.requests) == 1


async def test_bench_tools_offered_upstream_are_only_the_usable_ones(
    bench: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    tools = [
        {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
        for name in ("get_weather", "shell.exec", "browser.open", "calc")
    ]
    await oai(bench.url, api_key="sk-bench").chat.completions.create(model="bench-mock", messages=MESSAGES, tools=tools)
    assert [t["function"]["name"] for t in upstream.requests[0].body["tools"]] == ["get_weather", "calc"]


BROWSER = ("call_b", "browser.open", '{"url": "https://example.com"}')


async def test_bench_browser_call_is_denied_by_default_not_dry_run(
    bench: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, http: aiohttp.ClientSession
) -> None:
    """bench.yaml has no rule allowing browser.*: the enforced default deny wins over the dry-run rule.

    (docs/policies.md: "If the request would be denied anyway (by the enforced
    default), the dry-run rule changes nothing"; bench.cases.yaml says the same.)
    """
    upstream.push(Script(steps=tool_call_stream([BROWSER])))
    calls, finishes, content = reassemble(await stream_chunks(oai(bench.url, api_key="sk-bench"), model="bench-mock"))
    assert calls == {} and finishes == ["stop"] and "(default)" in content
    samples = await scrape(http, bench)
    assert metric(samples, "celgate_tool_calls_total", tool="browser.open", decision="deny", source="upstream") == 1
    assert metric(samples, "celgate_policy_decisions_total", point="tool_call", effect="deny", rule="default") == 1
    assert not [
        v
        for labels, v in labelled(samples, "celgate_policy_decisions_total").items()
        if ("effect", "would_deny") in labels
    ]


async def test_bench_browser_call_under_the_dry_run_rule_passes_and_counts_as_would_deny(
    upstream: FakeUpstream,
    start_celgate: StartCelgate,
    oai: OpenAIFactory,
    http: aiohttp.ClientSession,
    bench_dir: Path,
) -> None:
    """With an allow rule for browser.* beside bench.yaml, the dry-run rule decides: would deny, traffic untouched."""
    (bench_dir / "browser.yaml").write_text(
        "version: 1\n"
        "rules:\n"
        "  - name: browser-for-search\n    on: tool_call\n    tools: ['browser.*']\n"
        "    when: principal.team == 'search'\n    effect: allow\n"
    )
    gate = await start_celgate(upstream=upstream.base_url, policies=bench_dir, no_policy=False)
    upstream.push(Script(steps=tool_call_stream([BROWSER])))
    calls, finishes, content = reassemble(await stream_chunks(oai(gate.url, api_key="sk-bench"), model="bench-mock"))
    assert calls == {0: {"id": "call_b", "name": "browser.open", "arguments": BROWSER[2]}}
    assert finishes == ["tool_calls"] and content == ""
    samples = await scrape(http, gate)
    assert (
        metric(samples, "celgate_tool_calls_total", tool="browser.open", decision="would_deny", source="upstream") == 1
    )
    assert (
        metric(
            samples,
            "celgate_policy_decisions_total",
            point="tool_call",
            effect="would_deny",
            rule="dry-run-new-browser-rule",
        )
        == 1
    )


# --------------------------------------------------------------------------- 5. audit log

AUDIT_KEY = "sk-audit-secret-key"
AUDIT_KEY_SHA = hashlib.sha256(AUDIT_KEY.encode()).hexdigest()
AUDIT_POLICY = f"""\
version: 1
defaults:
  decision: deny
principals:
  - id: auditor
    key_sha256: {AUDIT_KEY_SHA}
    team: audit
rules:
  - name: audit-models
    on: request
    models: ["gpt-4o*"]
    effect: allow
  - name: weather-in-sane-units
    on: tool_call
    tools: ["get_weather"]
    when: tool.arguments.unit in ["celsius", "fahrenheit"]
    effect: allow
  - name: no-shell
    on: tool_call
    tools: ["shell*"]
    effect: deny
    reason: no shells
"""
AUDIT_FIELDS = {"time", "request_id", "principal", "point", "subject", "effect", "rule", "reason", "mode", "eval_us"}


async def audited_traffic(gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory) -> tuple[str, str]:
    """A denied request and a stream with an allowed and a stripped call; returns their request ids."""
    client = oai(gate.url, api_key=AUDIT_KEY)
    with pytest.raises(openai.PermissionDeniedError) as info:
        await client.chat.completions.create(model="o3", messages=MESSAGES)
    denied_id = info.value.response.headers["x-request-id"]
    upstream.push(Script(steps=tool_call_stream([WEATHER, SHELL])))
    raw = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, stream=True)
    stream_id = raw.headers["x-request-id"]
    calls, _, _ = reassemble([chunk async for chunk in raw.parse()])
    assert [c["name"] for c in calls.values()] == ["get_weather"]
    assert denied_id and stream_id and denied_id != stream_id
    return denied_id, stream_id


async def test_audit_log_records_denials_only_without_keys_or_arguments(
    upstream: FakeUpstream, start_celgate: StartCelgate, oai: OpenAIFactory, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    gate = await start_celgate(
        upstream=upstream.base_url, policies=write_policy(tmp_path, AUDIT_POLICY), no_policy=False, audit_log=str(audit)
    )
    denied_id, stream_id = await audited_traffic(gate, upstream, oai)
    await gate.stop()

    text = audit.read_text()
    assert AUDIT_KEY not in text and AUDIT_KEY_SHA not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 2, lines
    request, tool = lines
    assert set(request) >= AUDIT_FIELDS and set(tool) >= AUDIT_FIELDS
    assert request["request_id"] == denied_id and tool["request_id"] == stream_id
    assert request["time"].endswith("Z") and isinstance(request["eval_us"], float)
    assert {k: request[k] for k in ("principal", "point", "subject", "effect", "rule", "mode")} == {
        "principal": "auditor",
        "point": "request",
        "subject": "o3",
        "effect": "deny",
        "rule": None,
        "mode": "enforce",
    }
    assert request["reason"] == "no rule allows it"
    assert {k: tool[k] for k in ("principal", "point", "subject", "effect", "rule", "reason", "mode")} == {
        "principal": "auditor",
        "point": "tool_call",
        "subject": "shell.exec",
        "effect": "deny",
        "rule": "no-shell",
        "reason": "no shells",
        "mode": "enforce",
    }
    assert tool["tool_call_id"] == "call_s" and tool["action"] == "strip"
    assert "arguments" not in tool and "rm -rf" not in text


async def test_audit_log_with_allows_and_arguments(
    upstream: FakeUpstream, start_celgate: StartCelgate, oai: OpenAIFactory, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    gate = await start_celgate(
        upstream=upstream.base_url,
        policies=write_policy(tmp_path, AUDIT_POLICY),
        no_policy=False,
        audit_log=str(audit),
        audit_allows=True,
        audit_arguments=True,
    )
    denied_id, stream_id = await audited_traffic(gate, upstream, oai)
    await gate.stop()

    text = audit.read_text()
    assert AUDIT_KEY not in text and AUDIT_KEY_SHA not in text
    lines = [json.loads(line) for line in text.splitlines()]
    summary = [(r["request_id"], r["point"], r["subject"], r["effect"], r["rule"]) for r in lines]
    assert summary == [
        (denied_id, "request", "o3", "deny", None),
        (stream_id, "request", "gpt-4o", "allow", "audit-models"),
        (stream_id, "tool_call", "get_weather", "allow", "weather-in-sane-units"),
        (stream_id, "tool_call", "shell.exec", "deny", "no-shell"),
    ]
    assert all(set(r) >= AUDIT_FIELDS and r["principal"] == "auditor" for r in lines)
    assert lines[2]["arguments"] == WEATHER_ARGS  # decided once its arguments were complete
    # shell.exec is decided on its name alone (no candidate rule reads arguments), as soon as the
    # name and the first argument fragment arrive: the audit line holds the arguments seen so far.
    assert lines[3]["arguments"] and SHELL[2].startswith(lines[3]["arguments"])
    assert "arguments" not in lines[0] and "arguments" not in lines[1]


# --------------------------------------------------------------------------- 6. fail closed

FAIL_CLOSED_POLICY = """\
version: 1
defaults:
  decision: deny
rules:
  - name: any-model
    on: request
    effect: allow
  - name: cap-tokens
    on: request
    models: ["capped-*"]
    when: request.max_tokens > 1000
    effect: deny
    reason: too many tokens
  - name: weather-in-celsius
    on: tool_call
    tools: ["get_weather"]
    when: tool.arguments.unit == "celsius"
    effect: allow
  - name: read-files
    on: tool_call
    tools: ["read_file"]
    effect: allow
  - name: no-traversal
    on: tool_call
    tools: ["read_file"]
    when: tool.arguments.path.contains("..")
    effect: deny
    reason: no path traversal
"""


@pytest.fixture
async def fail_closed(upstream: FakeUpstream, start_celgate: StartCelgate, tmp_path: Path) -> Celgate:
    return await start_celgate(
        upstream=upstream.base_url, policies=write_policy(tmp_path, FAIL_CLOSED_POLICY), no_policy=False
    )


async def test_an_erroring_allow_rule_never_allows(
    fail_closed: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, http: aiohttp.ClientSession
) -> None:
    no_unit = ("call_n", "get_weather", '{"location": "Oslo"}')
    upstream.push(
        Script(steps=tool_call_stream([no_unit])),
        Script(json=completion(None, tool_calls=[no_unit])),
        Script(steps=tool_call_stream([WEATHER])),
    )
    client = oai(fail_closed.url)
    calls, finishes, content = reassemble(await stream_chunks(client, model="m"))
    assert calls == {} and finishes == ["stop"] and "(default)" in content
    answer = await client.chat.completions.create(model="m", messages=MESSAGES)
    assert answer.choices[0].message.tool_calls is None and answer.choices[0].finish_reason == "stop"
    samples = await scrape(http, fail_closed)
    assert metric(samples, "celgate_policy_eval_errors_total", rule="weather-in-celsius") == 2
    assert metric(samples, "celgate_tool_calls_total", tool="get_weather", decision="deny", source="upstream") == 2

    calls, _, _ = reassemble(await stream_chunks(client, model="m"))  # the same rule, when it can be evaluated
    assert [c["name"] for c in calls.values()] == ["get_weather"]
    samples = await scrape(http, fail_closed)
    assert metric(samples, "celgate_policy_eval_errors_total", rule="weather-in-celsius") == 2


async def test_an_erroring_deny_rule_denies(
    fail_closed: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, http: aiohttp.ClientSession
) -> None:
    client = oai(fail_closed.url)
    for _ in range(2):  # twice: a cached rule result must still count its error
        error = await denied(client.chat.completions.create(model="capped-model", messages=MESSAGES))
        assert "cap-tokens" in error["message"]
    assert upstream.requests == []
    answer = await client.chat.completions.create(model="capped-model", messages=MESSAGES, max_tokens=10)
    assert answer.choices[0].message.content == "Hello world"

    no_path = ("call_p", "read_file", "{}")
    fine = ("call_f", "read_file", '{"path": "notes.txt"}')
    upstream.push(Script(json=completion(None, tool_calls=[no_path, fine])))
    answer = await client.chat.completions.create(model="m", messages=MESSAGES)
    assert [c.id for c in answer.choices[0].message.tool_calls or []] == ["call_f"]

    samples = await scrape(http, fail_closed)
    assert metric(samples, "celgate_policy_eval_errors_total", rule="cap-tokens") == 2
    assert metric(samples, "celgate_policy_eval_errors_total", rule="no-traversal") == 1
    assert metric(samples, "celgate_policy_decisions_total", point="request", effect="deny", rule="cap-tokens") == 2
    assert metric(samples, "celgate_policy_decisions_total", point="tool_call", effect="deny", rule="no-traversal") == 1


# --------------------------------------------------------------------------- 7. --no-policy


async def test_no_policy_allows_everything_and_says_so(
    celgate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, http: aiohttp.ClientSession
) -> None:
    steps = tool_call_stream([SHELL, WEATHER])
    upstream.push(Script(steps=steps))
    async with http.post(
        celgate.url + "/chat/completions", json={"model": "anything", "messages": MESSAGES, "stream": True}
    ) as response:
        assert await response.read() == b"".join(s.data for s in steps)
    tools = [{"type": "function", "function": {"name": "shell.exec", "parameters": {"type": "object"}}}]
    upstream.push(Script(json=completion(None, tool_calls=[SHELL])))
    answer = await oai(celgate.url).chat.completions.create(model="o3", messages=MESSAGES, tools=tools)
    assert [c.function.name for c in answer.choices[0].message.tool_calls or []] == ["shell.exec"]
    assert upstream.requests[-1].body["tools"] == tools

    ready = await get_json(http, celgate.root + "/readyz")
    assert ready["ready"] is True and ready["policy"]["mode"].startswith("disabled")
    assert "everything allowed" in ready["policy"]["mode"]
    status = await policies_status(http, celgate)
    assert status["active"] is None and status["mode"].startswith("disabled") and status["last_error"] is None


def test_a_missing_policy_directory_refuses_to_start(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-policies"
    with pytest.raises(SettingsError) as info:
        create_app(
            Settings(
                port=0,
                policies=missing,
                no_policy=False,
                watch=False,
                access_log=None,
                agents=tmp_path / "no-agents",
                upstream_check=False,
            )
        )
    assert str(missing) in str(info.value) and "--no-policy" in str(info.value)


def test_a_broken_policy_refuses_to_start(tmp_path: Path) -> None:
    directory = write_policy(tmp_path, BROKEN_CEL)
    with pytest.raises(PolicyLoadError) as info:
        create_app(
            Settings(
                port=0,
                policies=directory,
                no_policy=False,
                watch=False,
                access_log=None,
                agents=tmp_path / "no-agents",
                upstream_check=False,
            )
        )
    assert "policy.yaml" in str(info.value) and "short-models-only" in str(info.value)


# --------------------------------------------------------------------------- 8. x-celgate-agent

AGENT_POLICY = """\
version: 1
defaults:
  decision: deny
rules:
  - name: agents-only
    on: request
    agents: ["*Agent"]
    effect: allow
  - name: agent-tools
    on: tool_call
    agents: ["*Agent"]
    tools: ["get_weather"]
    when: request.agent == "WeatherAgent"
    effect: allow
"""


async def test_the_agent_header_selects_agent_rules(
    upstream: FakeUpstream, start_celgate: StartCelgate, oai: OpenAIFactory, tmp_path: Path
) -> None:
    """On celgate's own loopback calls (internal token) ``x-celgate-agent`` names the agent rules apply to."""
    gate = await start_celgate(
        upstream=upstream.base_url, policies=write_policy(tmp_path, AGENT_POLICY), no_policy=False
    )
    client = oai(gate.url)
    internal = {"x-celgate-internal": gate.app[GATEWAY_TOKEN]}
    error = await denied(client.chat.completions.create(model="m", messages=MESSAGES))
    assert "(default)" in error["message"]
    error = await denied(
        client.chat.completions.create(
            model="m", messages=MESSAGES, extra_headers={**internal, "x-celgate-agent": "researchagent"}
        )
    )
    assert upstream.requests == []  # globs are case-sensitive: *Agent does not match researchagent

    answer = await client.chat.completions.create(
        model="m", messages=MESSAGES, extra_headers={**internal, "x-celgate-agent": "ResearchAgent"}
    )
    assert answer.choices[0].message.content == "Hello world"
    sent = {k.lower() for k in upstream.requests[-1].headers}
    assert "x-celgate-agent" not in sent and "x-celgate-internal" not in sent  # never forwarded

    upstream.push(
        Script(json=completion(None, tool_calls=[WEATHER])), Script(json=completion(None, tool_calls=[WEATHER]))
    )
    weather = await client.chat.completions.create(
        model="m", messages=MESSAGES, extra_headers={**internal, "x-celgate-agent": "WeatherAgent"}
    )
    assert [c.function.name for c in weather.choices[0].message.tool_calls or []] == ["get_weather"]
    research = await client.chat.completions.create(
        model="m", messages=MESSAGES, extra_headers={**internal, "x-celgate-agent": "ResearchAgent"}
    )
    assert research.choices[0].message.tool_calls is None and research.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("token", [None, "", "not-the-token"])
async def test_a_spoofed_agent_header_changes_nothing(
    upstream: FakeUpstream, start_celgate: StartCelgate, oai: OpenAIFactory, tmp_path: Path, token: str | None
) -> None:
    """Without celgate's internal token, claiming an agent's name grants none of its permissions."""
    gate = await start_celgate(
        upstream=upstream.base_url, policies=write_policy(tmp_path, AGENT_POLICY), no_policy=False
    )
    headers = {"x-celgate-agent": "WeatherAgent", **({"x-celgate-internal": token} if token is not None else {})}
    error = await denied(oai(gate.url).chat.completions.create(model="m", messages=MESSAGES, extra_headers=headers))
    assert "(default)" in error["message"]
    assert upstream.requests == []
