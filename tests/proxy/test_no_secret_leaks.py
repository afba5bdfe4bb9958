"""No key, token, password or (by default) tool argument leaks into anything celgate writes or answers.

One celgate per auth mode (sidecar keys with an upstream key; passthrough with
the clients' keys), both with an admin token, an audit log and an access log
in files, and celgate's own JSON and text log lines captured. Traffic goes
through every kind of route: chat (streamed and not), responses (streamed and
not), models, embeddings, an unknown /v1 route, an unknown path, a denied
request, a denied tool call whose arguments look secret (streamed and not), a
stream the upstream cuts, an unknown key, a model name that is a key, a
drop-in agent that fails to load with a password and keys in its exception, a
drop-in whose tool fails its run with them (chat and Responses, streamed and
not), a
policy reload that fails quoting a password, and the admin routes with no,
wrong and right token. Then every output is searched for every secret: the
logs, the access and audit logs, ``/metrics``, every ``/admin/*`` JSON, and
every status, header and body the clients got.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from celgate.adapters.sdkenv import prepare_sdk
from celgate.policy import PolicyStore
from celgate.proxy.accesslog import log_handler
from celgate.proxy.keys import ENFORCER
from celgate.proxy.redaction import REDACTED
from celgate.proxy.settings import Secret
from tests.helpers import Celgate, StartCelgate, write_policy
from tests.helpers.fakeupstream import FakeUpstream, Script, Step, completion, text_stream, tool_call_stream

UPSTREAM_KEY = "sk-upstream-leakcheck-0123456789abcdef"
ALICE_KEY = "sk-alice-leakcheck-abcdef0123456789"  # a principal known by key_sha256
BOB_KEY = "bob-plain-leakcheck-7f3a9c2e1d5b"  # a principal known by key_env; no secret shape at all
STRANGER_KEY = "sk-stranger-leakcheck-99999999aaaa"  # no principal
ADMIN_TOKEN = "admin-leakcheck-token-5b7d9f1e3a2c"
WRONG_ADMIN_TOKEN = "wrong-admin-leakcheck-token-1234"
DB_PASSWORD = "hunter2-leakcheck-dbpw"
AWS_KEY = "AKIALEAKCHECK0000000"
RELOAD_PASSWORD = "reload-leakcheck-pw"
TOOL_TOKEN = "tool-arg-leakcheck-token-42"
TOOL_PASSWORD = "tool-arg-leakcheck-password"
SECRETS = {
    "upstream key": UPSTREAM_KEY, "alice's key": ALICE_KEY, "bob's key": BOB_KEY, "a stranger's key": STRANGER_KEY,
    "admin token": ADMIN_TOKEN, "wrong admin token": WRONG_ADMIN_TOKEN, "database password": DB_PASSWORD,
    "AWS key": AWS_KEY, "password in a policy": RELOAD_PASSWORD, "tool-argument token": TOOL_TOKEN,
    "tool-argument password": TOOL_PASSWORD,
}  # fmt: skip
BOB_ENV = "CELGATE_TEST_BOB_KEY"

SECRET_ARGS = json.dumps({"cmd": f"curl -H 'Authorization: Bearer {TOOL_TOKEN}' https://x", "password": TOOL_PASSWORD})
DENIED_CALL = ("call_shell", "shell.exec", SECRET_ARGS)
MESSAGES = [{"role": "user", "content": "Hi"}]
ADMIN_ROUTES = ("/metrics", "/admin/metrics", "/admin/policies", "/admin/agents", "/admin/agents/errors")

POLICY = f"""\
version: 1
defaults:
  decision: allow
principals:
  - id: alice
    key_sha256: {hashlib.sha256(ALICE_KEY.encode()).hexdigest()}
  - id: bob
    key_env: {BOB_ENV}
rules:
  - name: no-o3
    on: request
    models: ["o3*"]
    effect: deny
    reason: o3 is not allowed here
  - name: no-shell
    on: tool_call
    tools: ["shell*"]
    effect: deny
    reason: no shells
routes:
  - id: embeddings
    paths: ["/v1/embeddings"]
    methods: ["POST"]
"""
BROKEN_POLICY = POLICY.replace("effect: deny\n    reason: no shells", f'effect: "mysql://root:{RELOAD_PASSWORD}@db/x"')
BROKEN_AGENT = f"""\
    DB_PASSWORD = "{DB_PASSWORD}"
    raise RuntimeError(
        "cannot connect to postgresql://agent:{DB_PASSWORD}@db.internal:5432/app"
        " (aws {AWS_KEY}, api key {BOB_KEY}, upstream key {UPSTREAM_KEY})"
    )
"""
LEAKY_AGENT = f"""\
    from agents import Agent, function_tool


    @function_tool(failure_error_function=None)  # the exception fails the run instead of becoming a tool result
    def connect() -> str:
        \"\"\"Connects to the database.\"\"\"
        raise RuntimeError("cannot connect to postgresql://agent:{DB_PASSWORD}@db.internal/app (key {BOB_KEY})")


    agent = Agent(name="Leaky", instructions="Connect.", tools=[connect])
"""
LEAKY_CALL = [("call_connect", "connect", "{}")]


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Bob's key for ``key_env``; the OPENAI_* variables the agent registry may set are undone after."""
    monkeypatch.setenv(BOB_ENV, BOB_KEY)
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_AGENTS_DISABLE_TRACING"):
        monkeypatch.setenv(name, "x")  # records the original value (or its absence) for the undo
        monkeypatch.delenv(name)
    prepare_sdk.cache_clear()
    yield
    prepare_sdk.cache_clear()


@pytest.fixture
def logs() -> Iterator[dict[str, io.StringIO]]:
    """celgate's diagnostic lines, at debug level, through its own JSON and text handlers."""
    buffers = {"json": io.StringIO(), "text": io.StringIO()}
    handlers = [log_handler(fmt, buffer) for fmt, buffer in buffers.items()]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    for handler in handlers:
        root.addHandler(handler)
    yield buffers
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(level)


class Client:
    """Raw HTTP calls that keep every status, header and body the client got."""

    def __init__(self, http: aiohttp.ClientSession, gate: Celgate) -> None:
        self.http = http
        self.gate = gate
        self.seen: list[str] = []

    async def call(
        self, method: str, path: str, *, key: str | None = None, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        async with self.http.request(method, self.gate.root + path, json=body, headers=sent) as response:
            data = await response.read()
            self.seen.append(f"{response.status} {list(response.headers.items())}\n{data.decode(errors='replace')}")
            return response.status, data

    async def admin(self, path: str) -> tuple[int, bytes]:
        return await self.call("GET", path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})


def chat(model: str = "fake-model", *, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, "stream": stream}


async def drive(client: Client, upstream: FakeUpstream, sidecar: bool) -> dict[str, bytes]:
    """Every route kind once (or more); returns the admin views fetched with the right token."""
    for key in (ALICE_KEY, BOB_KEY):
        assert (await client.call("POST", "/v1/chat/completions", key=key, body=chat()))[0] == 200
        assert (await client.call("POST", "/v1/chat/completions", key=key, body=chat(stream=True)))[0] == 200
    responses = {"model": "fake-model", "input": "Hi"}
    assert (await client.call("POST", "/v1/responses", key=ALICE_KEY, body=responses))[0] == 200
    assert (await client.call("POST", "/v1/responses", key=ALICE_KEY, body={**responses, "stream": True}))[0] == 200
    assert (await client.call("GET", "/v1/models", key=BOB_KEY))[0] == 200
    embeddings = {"model": "emb", "input": "x"}
    assert (await client.call("POST", "/v1/embeddings", key=ALICE_KEY, body=embeddings))[0] == 200
    assert (await client.call("POST", "/v1/unknown-route", key=ALICE_KEY, body={}))[0] in (403, 404)
    assert (await client.call("GET", "/not-a-route", key=ALICE_KEY))[0] == 404
    assert (await client.call("POST", "/v1/chat/completions", key=ALICE_KEY, body=chat("o3-mini")))[0] == 403

    upstream.push(Script(json=completion(None, tool_calls=[DENIED_CALL])))
    status, body = await client.call("POST", "/v1/chat/completions", key=ALICE_KEY, body=chat())
    assert status == 200 and b"no shells" in body  # stripped, and the reply says why
    upstream.push(Script(steps=tool_call_stream([DENIED_CALL])))
    status, body = await client.call("POST", "/v1/chat/completions", key=BOB_KEY, body=chat(stream=True))
    assert status == 200 and b"no shells" in body

    upstream.push(Script(steps=[*text_stream(["cut"], done=False)[:2], Step(reset=True)]))
    assert (await client.call("POST", "/v1/chat/completions", key=ALICE_KEY, body=chat(stream=True)))[0] == 200

    status, _ = await client.call("POST", "/v1/chat/completions", key=STRANGER_KEY, body=chat())
    assert status == (401 if sidecar else 200)
    assert (await client.call("POST", "/v1/chat/completions", body=chat()))[0] == (401 if sidecar else 200)
    for model in (ALICE_KEY, BOB_KEY, STRANGER_KEY):  # a key pasted as the model name
        assert (await client.call("POST", "/v1/chat/completions", key=ALICE_KEY, body=chat(model)))[0] == 200

    status, body = await client.call("POST", "/v1/chat/completions", key=ALICE_KEY, body=chat("Broken"))
    assert status == 503 and REDACTED.encode() in body

    await run_leaky_agent(client, upstream)
    await upstream_errors_echoing_the_key(client, upstream, UPSTREAM_KEY if sidecar else ALICE_KEY)

    store = client.gate.app[ENFORCER].source
    assert isinstance(store, PolicyStore)
    (store.directory / "policy.yaml").write_text(BROKEN_POLICY)
    assert not store.reload().ok

    for path in ADMIN_ROUTES:
        assert (await client.call("GET", path))[0] == 401
        assert (await client.call("GET", path, key=WRONG_ADMIN_TOKEN))[0] == 401
        assert (await client.call("GET", path, key=ALICE_KEY))[0] == 401
    views = {}
    for path in ADMIN_ROUTES:
        status, views[path] = await client.admin(path)
        assert status == 200, views[path]
    for probe in ("/healthz", "/readyz"):
        assert (await client.call("GET", probe))[0] == 200
    return views


async def run_leaky_agent(client: Client, upstream: FakeUpstream) -> None:
    """A drop-in whose tool raises with secrets in its message: chat and Responses, streamed and not."""
    for path, body in (
        ("/v1/chat/completions", chat("Leaky")),
        ("/v1/responses", {"model": "Leaky", "input": "Hi"}),
    ):
        upstream.push(Script(json=completion(None, tool_calls=LEAKY_CALL)))
        status, answer = await client.call("POST", path, key=ALICE_KEY, body=body)
        assert status == 500 and b"Error running tool connect" in answer and REDACTED.encode() in answer, answer
        upstream.push(Script(steps=tool_call_stream(LEAKY_CALL)))
        status, answer = await client.call("POST", path, key=ALICE_KEY, body={**body, "stream": True})
        assert status == 200 and b"event: error" in answer and REDACTED.encode() in answer, answer


async def upstream_errors_echoing_the_key(client: Client, upstream: FakeUpstream, key: str) -> None:
    """An upstream error that quotes the credential it got (some do, whole) reaches the client redacted."""
    echo = {"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error"}}
    for method, path, body in (
        ("POST", "/v1/chat/completions", chat()),
        ("POST", "/v1/chat/completions", chat(stream=True)),
        ("POST", "/v1/responses", {"model": "fake-model", "input": "Hi"}),
        ("GET", "/v1/models", None),
        ("POST", "/v1/embeddings", {"model": "emb", "input": "x"}),
        ("GET", "/v1/chat/completions/chatcmpl-1", None),
    ):
        upstream.push(Script(status=401, json=echo))
        status, answer = await client.call(method, path, key=ALICE_KEY, body=body)
        assert status == 401 and b"Incorrect API key provided: " + REDACTED.encode() in answer, (path, answer)


@pytest.mark.parametrize("mode", ["sidecar", "passthrough"])
async def test_no_secret_reaches_any_output(
    mode: str, upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession,
    logs: dict[str, io.StringIO], tmp_path: Path,
) -> None:  # fmt: skip
    sidecar = mode == "sidecar"
    policies = write_policy(tmp_path, POLICY)
    agents = tmp_path / "agents"
    (agents / "Broken").mkdir(parents=True)
    (agents / "Broken" / "agent.py").write_text(textwrap.dedent(BROKEN_AGENT))
    (agents / "Leaky").mkdir()
    (agents / "Leaky" / "agent.py").write_text(textwrap.dedent(LEAKY_AGENT))
    access, audit = tmp_path / "access.log", tmp_path / "audit.log"
    gate = await start_celgate(
        upstream=upstream.base_url, no_policy=False, policies=policies, agents=agents, agents_model="fake-model",
        upstream_api_key=Secret(UPSTREAM_KEY) if sidecar else None, admin_token=Secret(ADMIN_TOKEN),
        access_log=str(access), audit_log=str(audit), log_level="debug",
    )  # fmt: skip
    client = Client(http, gate)
    views = await drive(client, upstream, sidecar)
    await gate.stop()  # flushes and closes the access and audit logs

    # the traffic really happened, and really carried the secrets
    sent = [r.headers.get("Authorization") for r in upstream.requests]
    if sidecar:
        assert set(sent) == {f"Bearer {UPSTREAM_KEY}"}
    else:
        assert {f"Bearer {ALICE_KEY}", f"Bearer {BOB_KEY}", f"Bearer {STRANGER_KEY}"} <= set(sent)
    errors = json.loads(views["/admin/agents/errors"])["errors"]
    assert [e["agent"] for e in errors] == ["Broken"] and REDACTED in errors[0]["message"]
    assert "RuntimeError" in errors[0]["message"] and "postgresql://agent:" in errors[0]["message"]
    last_error = json.loads(views["/admin/policies"])["last_error"]
    assert last_error is not None and REDACTED in last_error["message"]
    audit_lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {(r["point"], r["subject"]) for r in audit_lines if r["effect"] == "deny"} >= {
        ("request", "o3-mini"), ("tool_call", "shell.exec")}  # fmt: skip
    assert all("arguments" not in r for r in audit_lines)
    access_lines = [json.loads(line) for line in access.read_text().splitlines()]
    assert len(access_lines) == len(client.seen) + 4  # and the Leaky agent's four model calls over loopback
    assert {"alice", "bob"} <= {line["principal"] for line in access_lines}
    log_text = logs["text"].getvalue()
    json_lines = [json.loads(line) for line in logs["json"].getvalue().splitlines()]
    assert "failed to load" in log_text and "policy reload failed" in log_text and REDACTED in log_text
    assert any("failed to load" in line["msg"] and REDACTED in line["msg"] for line in json_lines)

    outputs = {
        "text log": log_text,
        "JSON log": logs["json"].getvalue(),
        "access log": access.read_text(),
        "audit log": audit.read_text(),
        **{path: view.decode() for path, view in views.items()},
        "responses to clients": "\n".join(client.seen),
    }
    leaks = [(name, where) for name, secret in SECRETS.items() for where, text in outputs.items() if secret in text]
    assert not leaks, leaks
