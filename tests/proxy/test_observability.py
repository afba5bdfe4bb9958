"""Metrics: /metrics (Prometheus text) and /admin/metrics (JSON) agree; the celgate_* figures; app lifecycle."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from celgate.proxy.settings import Settings, UpstreamTimeouts
from tests.helpers import Celgate, OpenAIFactory, StartCelgate, free_port, write_policy
from tests.helpers.fakeupstream import FakeUpstream, Script, Step, text_stream, tool_call_stream
from tests.helpers.observe import Samples, parse_samples

MESSAGES = [{"role": "user", "content": "Hi"}]
SELF_ROUTES = {"/metrics", "/admin/metrics"}  # fetching the figures changes these figures


async def scrape(http: aiohttp.ClientSession, celgate: Celgate) -> tuple[Samples, Samples]:
    """(text samples, JSON samples), each {(name, labels): value}, minus the scrape routes' own figures."""
    async with http.get(celgate.root + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    async with http.get(celgate.root + "/admin/metrics") as response:
        assert response.status == 200
        families = await response.json()
    from_text = {key: v for key, v in parse_samples(text).items() if dict(key[1]).get("route") not in SELF_ROUTES}
    from_json: Samples = {}
    for family in families.values():
        assert set(family) == {"type", "help", "samples"}
        for sample in family["samples"]:
            if sample["labels"].get("route") not in SELF_ROUTES:
                from_json[(sample["name"], frozenset(sample["labels"].items()))] = _number(sample["value"])
    return from_text, from_json


def _number(value: Any) -> float:
    return float(value) if isinstance(value, str) else value


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} not in {sorted(k for k in samples if k[0] == name)}"
    return samples[key]


def values(samples: Samples, name: str, **labels: str) -> list[float]:
    return [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]


async def traffic(celgate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, http: aiohttp.ClientSession) -> None:
    client = oai(celgate.url)
    await client.chat.completions.create(model="fake-model", messages=MESSAGES)
    for _ in range(2):
        stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
        [_ async for _ in stream]
    upstream.push(
        Script(steps=tool_call_stream([("c1", "get_weather", '{"location": "Oslo"}'), ("c2", "get_time", "{}")]))
    )
    stream = await client.chat.completions.create(model="tool-model", messages=MESSAGES, stream=True)
    [_ async for _ in stream]
    upstream.push(Script(steps=[*text_stream(["cut"], done=False)[:2], Step(reset=True)]))
    stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError):
        [_ async for _ in stream]
    upstream.push(
        Script(status=429, json={"error": {"message": "slow down", "type": "requests", "param": None, "code": None}})
    )
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="fake-model", messages=MESSAGES)
    async with http.post(celgate.url + "/chat/completions", data=b"{oops") as response:
        assert response.status == 400
    async with http.post(celgate.url + "/embeddings", json={"model": "emb", "input": "x"}) as response:
        assert response.status == 200
    [_ async for _ in client.models.list()]


async def test_prometheus_text_and_admin_json_agree(
    celgate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, http: aiohttp.ClientSession
) -> None:
    await traffic(celgate, upstream, oai, http)
    from_text, from_json = await scrape(http, celgate)
    assert set(from_text) == set(from_json)
    for key, number in from_text.items():
        other = from_json[key]
        assert (
            number == other or (math.isnan(number) and math.isnan(other)) or math.isclose(number, other, rel_tol=1e-12)
        ), key
    assert all(name.startswith("celgate_") for name, _ in from_text)


async def test_celgate_metrics_after_traffic(
    celgate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, http: aiohttp.ClientSession
) -> None:
    await traffic(celgate, upstream, oai, http)
    samples, _ = await scrape(http, celgate)
    chat = "/v1/chat/completions"
    assert value(samples, "celgate_requests_total", route=chat, model="fake-model", status="200") == 3
    assert value(samples, "celgate_requests_total", route=chat, model="tool-model", status="200") == 1
    assert value(samples, "celgate_requests_total", route=chat, model="fake-model", status="429") == 1
    assert value(samples, "celgate_requests_total", route=chat, model="fake-model", status="502") == 1  # cut stream
    assert value(samples, "celgate_requests_total", route=chat, model="", status="400") == 1
    assert value(samples, "celgate_requests_total", route="/v1/embeddings", model="emb", status="200") == 1
    assert value(samples, "celgate_requests_total", route="/v1/models", model="", status="200") == 1
    assert value(samples, "celgate_request_duration_seconds_count", route=chat) == 7
    assert value(samples, "celgate_upstream_duration_seconds_count", route="chat") == 6
    assert value(samples, "celgate_stream_ttfb_seconds_count") == 4
    assert value(samples, "celgate_active_streams") == 0
    assert value(samples, "celgate_upstream_errors_total", kind="upstream_reset") == 1
    # --no-policy decides nothing: no decision or tool-call counts appear at all
    assert not [k for k in samples if k[0] in ("celgate_tool_calls_total", "celgate_policy_decisions_total")]
    buckets = values(samples, "celgate_stream_ttfb_seconds_bucket")
    assert buckets == sorted(buckets) and max(buckets) == 4  # cumulative, +Inf holds every stream


async def test_the_status_of_a_stream_cut_midway_is_recorded_as_the_fault(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.push(Script(steps=[*text_stream(["cut"], done=False)[:2], Step(reset=True)]))
    async with http.post(
        celgate.url + "/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True}
    ) as r:
        await r.read()
        assert r.status == 200  # the headers went out before the fault
    samples, _ = await scrape(http, celgate)
    assert value(samples, "celgate_requests_total", route="/v1/chat/completions", model="m", status="502") == 1


async def test_active_streams_counts_open_streams(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()
    steps = text_stream(["a", "b"])
    steps[2].wait = release
    upstream.push(Script(steps=steps), Script(steps=list(steps)))
    responses = [
        await http.post(celgate.url + "/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True})
        for _ in range(2)
    ]
    for response in responses:
        await response.content.readuntil(b"\n\n")
    samples, _ = await scrape(http, celgate)
    assert value(samples, "celgate_active_streams") == 2
    release.set()
    for response in responses:
        await response.read()
        response.release()
    samples, _ = await scrape(http, celgate)
    assert value(samples, "celgate_active_streams") == 0


@pytest.mark.parametrize(
    ("script", "kind", "timeouts"),
    [
        (None, "upstream_unreachable", None),
        (Script(reset=True), "upstream_reset", None),
        (Script(garbage=b"SSH-2.0-OpenSSH_9.6\r\n"), "upstream_bad_response", None),
        (Script(delay=30), "upstream_timeout", UpstreamTimeouts(first_byte=0.3)),
        (Script(steps=[Step(b"data: {}\n\n"), Step(stall=30)]), "upstream_timeout", UpstreamTimeouts(idle=0.3)),
    ],
)
async def test_upstream_errors_by_kind(
    upstream: FakeUpstream,
    start_celgate: StartCelgate,
    http: aiohttp.ClientSession,
    script: Script | None,
    kind: str,
    timeouts: UpstreamTimeouts | None,
) -> None:
    url = upstream.base_url if script is not None else f"http://127.0.0.1:{free_port()}/v1"
    celgate = await start_celgate(upstream=url, **({"timeouts": timeouts} if timeouts else {}))
    if script is not None:
        upstream.push(script)
    async with http.post(
        celgate.url + "/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True}
    ) as r:
        await r.read()
    samples, _ = await scrape(http, celgate)
    assert value(samples, "celgate_upstream_errors_total", kind=kind) == 1
    assert sum(values(samples, "celgate_upstream_errors_total")) == 1


async def test_tool_call_metrics_by_decision(
    upstream: FakeUpstream,
    start_celgate: StartCelgate,
    oai: OpenAIFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    policies = write_policy(
        tmp_path,
        "version: 1\n"
        "defaults:\n  decision: allow\n"
        "rules:\n"
        "  - name: no-shell\n    on: tool_call\n    tools: ['shell*']\n    effect: deny\n    reason: no shells\n",
        "tools.yaml",
    )
    celgate = await start_celgate(upstream=upstream.base_url, no_policy=False, policies=policies)
    upstream.push(Script(steps=tool_call_stream([("c1", "get_weather", "{}"), ("c2", "shell.exec", '{"cmd": "ls"}')])))
    stream = await oai(celgate.url).chat.completions.create(model="m", messages=MESSAGES, stream=True)
    names = [
        tc.function.name
        async for chunk in stream
        for choice in chunk.choices
        for tc in (choice.delta.tool_calls or [])
        if tc.function and tc.function.name
    ]
    assert names == ["get_weather"]
    samples, _ = await scrape(http, celgate)
    assert value(samples, "celgate_tool_calls_total", tool="get_weather", decision="allow", source="upstream") == 1
    assert value(samples, "celgate_tool_calls_total", tool="shell.exec", decision="deny", source="upstream") == 1


async def test_no_policy_exports_the_expected_families(celgate: Celgate, http: aiohttp.ClientSession) -> None:
    async with http.get(celgate.root + "/metrics") as response:
        names = {family.name for family in text_string_to_metric_families(await response.text())}
    for name in (
        "celgate_requests",
        "celgate_request_duration_seconds",
        "celgate_upstream_duration_seconds",
        "celgate_stream_ttfb_seconds",
        "celgate_active_streams",
        "celgate_upstream_errors",
        "celgate_tool_calls",
    ):
        assert name in names


# ---------------------------------------------------------------------------------- lifecycle


async def test_start_and_stop_twice_in_one_process(upstream: FakeUpstream, http: aiohttp.ClientSession) -> None:
    from celgate.proxy import create_app

    settings = Settings(
        port=0,
        upstream=upstream.base_url,
        no_policy=True,
        access_log=None,
        watch=False,
        agents=Path("/nonexistent-agents-dir"),
        upstream_check=False,
    )
    apps: list[web.Application] = []
    for round_ in range(2):
        app = create_app(settings)
        apps.append(app)
        running = await Celgate.start(app)
        root = running.root
        try:
            for _ in range(round_ + 1):
                async with http.post(root + "/v1/chat/completions", json={"model": "m", "messages": MESSAGES}) as r:
                    assert r.status == 200
            async with http.get(root + "/metrics") as r:
                samples = {
                    (s.name, frozenset(s.labels.items())): s.value
                    for f in text_string_to_metric_families(await r.text())
                    for s in f.samples
                }
            key = (
                "celgate_requests_total",
                frozenset({"route": "/v1/chat/completions", "model": "m", "status": "200"}.items()),
            )
            assert samples[key] == round_ + 1  # each app counts only its own requests
        finally:
            await running.stop()
    from celgate.proxy.keys import METRICS

    assert apps[0][METRICS].registry is not apps[1][METRICS].registry


async def test_two_apps_side_by_side_keep_separate_metrics(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession
) -> None:
    first = await start_celgate(upstream=upstream.base_url)
    second = await start_celgate(upstream=upstream.base_url)
    async with http.post(first.url + "/chat/completions", json={"model": "only-first", "messages": MESSAGES}) as r:
        assert r.status == 200
    first_samples, _ = await scrape(http, first)
    second_samples, _ = await scrape(http, second)
    assert values(first_samples, "celgate_requests_total", model="only-first") == [1]
    assert values(second_samples, "celgate_requests_total", model="only-first") == []


# ---------------------------------------------------------------------------------- label bounds


async def test_distinct_models_past_the_limit_fold_into_other(celgate: Celgate, http: aiohttp.ClientSession) -> None:
    """200 model names a client made up: at most ``_MAX_DISTINCT`` series, plus one ``other``."""
    from celgate.proxy.metrics import _MAX_DISTINCT, OTHER

    for n in range(200):
        async with http.post(celgate.url + "/chat/completions", json={"model": f"m-{n}", "messages": MESSAGES}) as r:
            assert r.status == 200
    samples, _ = await scrape(http, celgate)
    chat = {
        labels: v
        for (name, labels), v in samples.items()
        if name == "celgate_requests_total" and ("route", "/v1/chat/completions") in labels
    }
    models = {dict(labels)["model"] for labels in chat}
    assert len(chat) == len(models) == _MAX_DISTINCT + 1
    assert models == {f"m-{n}" for n in range(_MAX_DISTINCT)} | {OTHER}  # the first ones seen keep their series
    assert value(samples, "celgate_requests_total", route="/v1/chat/completions", model=OTHER, status="200") == (
        200 - _MAX_DISTINCT
    )
    assert sum(chat.values()) == 200


def test_distinct_tools_past_the_limit_fold_into_other() -> None:
    from celgate.proxy.metrics import _MAX_DISTINCT, OTHER, Metrics

    metrics = Metrics()
    for n in range(200):
        metrics.tool_calls.labels(f"tool-{n}", "allow", "upstream").inc()
        metrics.tool_calls.labels(f"tool-{n}", "deny", "agent").inc()  # a known tool keeps its series in any decision
        metrics.tool_duration.labels(f"tool-{n}").observe(0.01)
        metrics.tool_failures.labels(f"tool-{n}").inc()
    families = metrics.as_json()
    for family, sample_name in (
        ("celgate_tool_calls", "celgate_tool_calls_total"),
        ("celgate_tool_duration_seconds", "celgate_tool_duration_seconds_count"),
        ("celgate_tool_failures", "celgate_tool_failures_total"),
    ):
        samples = [s for s in families[family]["samples"] if s["name"] == sample_name]
        tools = {s["labels"]["tool"] for s in samples}
        assert tools == {f"tool-{n}" for n in range(_MAX_DISTINCT)} | {OTHER}, family
        assert sum(s["value"] for s in samples) == (400 if family == "celgate_tool_calls" else 200)
    calls = [s for s in families["celgate_tool_calls"]["samples"] if s["name"] == "celgate_tool_calls_total"]
    assert len(calls) == 2 * (_MAX_DISTINCT + 1)
    other = {
        (s["labels"]["decision"], s["labels"]["source"]): s["value"] for s in calls if s["labels"]["tool"] == OTHER
    }
    assert other == {("allow", "upstream"): 200 - _MAX_DISTINCT, ("deny", "agent"): 200 - _MAX_DISTINCT}


def test_bounded_labels_leave_other_labels_alone() -> None:
    """Only the client-fed label folds: routes, statuses, decisions and rules keep every value."""
    from celgate.proxy.metrics import Metrics

    metrics = Metrics()
    for n in range(150):
        metrics.requests.labels(f"/route-{n}", "m", str(n)).inc()
        metrics.policy_decisions.labels("request", "allow", f"rule-{n}").inc()
    families = metrics.as_json()
    assert len([s for s in families["celgate_requests"]["samples"] if s["name"] == "celgate_requests_total"]) == 150
    assert (
        len(
            [
                s
                for s in families["celgate_policy_decisions"]["samples"]
                if s["name"] == "celgate_policy_decisions_total"
            ]
        )
        == 150
    )


async def test_a_key_sent_as_a_model_name_is_not_a_label(celgate: Celgate, http: aiohttp.ClientSession) -> None:
    key = "sk-pasted-into-model-0123456789"
    async with http.post(celgate.url + "/chat/completions", json={"model": key, "messages": MESSAGES}) as r:
        assert r.status == 200
    async with http.get(celgate.root + "/metrics") as response:
        text = await response.text()
    assert key not in text and 'model="[redacted]"' in text
