"""``celgate policy test`` / ``explain`` decide as the proxy does, on every kind of route.

Both classify the path with the one route table (``celgate.policy.classify``):
governed routes by request (and tool-call) rules, tool-free routes by request
rules, not-governed routes by ``routes:`` first and then request rules. Each
case below is decided by the policy CLI's ``evaluate_case`` and sent to a
running celgate with the same principal; the two must agree.
"""

from __future__ import annotations

import hashlib
from typing import Any

import aiohttp
import pytest

from celgate.policy import PolicySet, PolicyStore
from celgate.policy.cli import CaseError, evaluate_case
from celgate.proxy.keys import ENFORCER
from tests.helpers import Celgate
from tests.helpers.fakeupstream import FakeUpstream, Script, completion

OPS_KEY = "sk-explain-ops-0123456789"
POLICY = f"""\
version: 1
defaults: {{decision: deny}}
principals:
  - {{id: ops, key_sha256: {hashlib.sha256(OPS_KEY.encode()).hexdigest()}, team: ops}}
rules:
  - name: requests
    on: request
    when: '!request.model.startsWith("forbidden")'
    effect: allow
  - name: no-shell
    on: tool_call
    tools: ["shell*"]
    effect: deny
  - name: other-tools
    on: tool_call
    effect: allow
routes:
  - id: ops-batches
    paths: ["/v1/batches", "/v1/batches/**"]
    principals: [ops]
"""
# (method, path, principal's key or None, model or None): every route kind, allowed and denied.
REQUESTS = [
    ("POST", "/v1/chat/completions", None, "ok-model"),
    ("POST", "/v1/chat/completions", None, "forbidden-model"),
    ("POST", "/v1/responses", None, "forbidden-model"),
    ("GET", "/v1/models", None, None),
    ("GET", "/v1/chat/completions/chatcmpl-1", None, None),
    ("POST", "/v1/embeddings", None, "ok-embed"),
    ("POST", "/v1/embeddings", None, "forbidden-embed"),
    ("DELETE", "/v1/responses/resp_1", None, None),
    ("POST", "/v1/batches", OPS_KEY, "ok-model"),
    ("POST", "/v1/batches", OPS_KEY, "forbidden-model"),
    ("POST", "/v1/batches", None, "ok-model"),
    ("GET", "/v1/assistants", OPS_KEY, None),
    ("PUT", "/v1/chat/completions", OPS_KEY, "ok-model"),
]


def snapshot(gate: Celgate) -> PolicySet:
    """The very policy set the running proxy decides with."""
    store = gate.app[ENFORCER].source
    assert isinstance(store, PolicyStore)
    return store.current


def cli_allows(gate: Celgate, case: dict[str, Any]) -> bool:
    return not evaluate_case(snapshot(gate), case).blocked


def case_for(method: str, path: str, key: str | None, model: str | None) -> dict[str, Any]:
    request: dict[str, Any] = {"method": method, "path": path, **({"model": model} if model else {})}
    return {"request": request, **({"key": key} if key else {"principal": "anonymous"})}


@pytest.mark.parametrize(("method", "path", "key", "model"), REQUESTS)
async def test_the_cli_admits_what_the_proxy_admits(
    method: str, path: str, key: str | None, model: str | None,
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    body: dict[str, Any] | None = None
    if model is not None:
        body = {"model": model, "input": "x", "messages": [{"role": "user", "content": "x"}]}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with http.request(method, gate.root + path, json=body, headers=headers) as response:
        proxy_allows = response.status != 403
    assert proxy_allows == bool(upstream.requests)
    assert cli_allows(gate, case_for(method, path, key, model)) == proxy_allows


@pytest.mark.parametrize(
    ("path", "tool"),
    [("/v1/chat/completions/chatcmpl-1", "shell.exec"), ("/v1/chat/completions/chatcmpl-1", "get_weather")],
)
async def test_the_cli_decides_stored_calls_as_the_proxy_filters_them(
    path: str, tool: str, gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.push(Script(json=completion(None, tool_calls=[("call_1", tool, "{}")])))
    async with http.get(gate.root + path) as response:
        message = (await response.json())["choices"][0]["message"]
    proxy_allows = [call["function"]["name"] for call in message.get("tool_calls") or []] == [tool]
    case = {**case_for("GET", path, None, None), "tool": {"name": tool, "source": "stored"}}
    assert cli_allows(gate, case) == proxy_allows


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/models"), ("POST", "/v1/embeddings")])
async def test_the_cli_refuses_tool_calls_where_the_proxy_has_none(gate: Celgate, method: str, path: str) -> None:
    with pytest.raises(CaseError, match="only on the routes whose replies carry them"):
        evaluate_case(snapshot(gate), {**case_for(method, path, None, None), "tool": {"name": "t"}})


async def test_a_non_canonical_path_is_refused_by_both(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(CaseError, match="not a canonical API path"):
        evaluate_case(snapshot(gate), case_for("POST", "/v1/chat/completions/", None, "ok-model"))
    body = {"model": "ok-model", "messages": []}
    async with http.post(gate.root + "/v1/chat/completions/", json=body) as response:
        assert response.status == 400 and upstream.requests == []
