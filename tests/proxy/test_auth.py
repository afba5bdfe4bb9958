"""Auth modes: passthrough (the client's key goes upstream) and sidecar keys; keys never logged."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import aiohttp
import openai
import pytest

from celgate.proxy.settings import Secret, SettingsError
from tests.helpers import Celgate, OpenAIFactory, StartCelgate, assert_openai_error, write_policy
from tests.helpers.fakeupstream import FakeUpstream

ALICE_KEY = "sk-alice-0123456789abcdef"
UPSTREAM_KEY = "sk-upstream-fedcba9876543210"
UNKNOWN_KEY = "sk-unknown-5555aaaa5555"
MESSAGES = [{"role": "user", "content": "Hi"}]


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A minimal policy: everything allowed, one principal (alice) known by her key's sha256."""
    return write_policy(
        tmp_path,
        "version: 1\n"
        "defaults:\n"
        "  decision: allow\n"
        "principals:\n"
        "  - id: alice\n"
        f"    key_sha256: {hashlib.sha256(ALICE_KEY.encode()).hexdigest()}\n"
        "    team: blue\n",
        "allow.yaml",
    )


async def test_passthrough_forwards_the_client_authorization_unchanged(
    celgate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, http: aiohttp.ClientSession
) -> None:
    client = oai(celgate.url, api_key="sk-client-key-1")
    await client.chat.completions.create(model="fake-model", messages=MESSAGES)
    stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    [_ async for _ in stream]
    [_ async for _ in client.models.list()]
    async with http.post(
        celgate.url + "/embeddings", json={"input": "x"}, headers={"Authorization": "Basic Zm9vOmJhcg=="}
    ):
        pass
    async with http.post(celgate.url + "/chat/completions", json={"model": "m", "messages": MESSAGES}):
        pass
    authorizations = [lower(r.headers).get("authorization") for r in upstream.requests]
    assert authorizations == ["Bearer sk-client-key-1"] * 3 + ["Basic Zm9vOmJhcg==", None]


async def test_passthrough_with_a_policy_resolves_principals_and_still_forwards_the_key(
    upstream: FakeUpstream,
    start_celgate: StartCelgate,
    oai: OpenAIFactory,
    policy_dir: Path,
    tmp_path: Path,
) -> None:
    access = tmp_path / "access.log"
    celgate = await start_celgate(
        upstream=upstream.base_url, no_policy=False, policies=policy_dir, access_log=str(access)
    )
    await oai(celgate.url, api_key=ALICE_KEY).chat.completions.create(model="fake-model", messages=MESSAGES)
    await oai(celgate.url, api_key=UNKNOWN_KEY).chat.completions.create(model="fake-model", messages=MESSAGES)
    assert [lower(r.headers)["authorization"] for r in upstream.requests] == [
        f"Bearer {ALICE_KEY}",
        f"Bearer {UNKNOWN_KEY}",
    ]
    await celgate.stop()
    lines = [json.loads(line) for line in access.read_text().splitlines()]
    assert [line["principal"] for line in lines] == ["alice", "anonymous"]
    assert ALICE_KEY not in access.read_text() and UNKNOWN_KEY not in access.read_text()


async def test_sidecar_keys_send_the_upstream_key(
    upstream: FakeUpstream,
    start_celgate: StartCelgate,
    oai: OpenAIFactory,
    http: aiohttp.ClientSession,
    policy_dir: Path,
) -> None:
    celgate = await start_celgate(
        upstream=upstream.base_url, no_policy=False, policies=policy_dir, upstream_api_key=Secret(UPSTREAM_KEY)
    )
    client = oai(celgate.url, api_key=ALICE_KEY)
    result = await client.chat.completions.create(model="fake-model", messages=MESSAGES)
    assert result.choices[0].message.content == "Hello world"
    stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    assert [c async for c in stream]
    assert [m.id async for m in client.models.list()] == ["fake-model"]
    async with http.post(
        celgate.url + "/embeddings", json={"input": "x"}, headers={"Authorization": f"Bearer {ALICE_KEY}"}
    ) as response:
        assert response.status == 200
    assert [lower(r.headers)["authorization"] for r in upstream.requests] == [f"Bearer {UPSTREAM_KEY}"] * 4
    assert not any(ALICE_KEY in json.dumps(r.headers) for r in upstream.requests)


@pytest.mark.parametrize("authorization", [f"Bearer {UNKNOWN_KEY}", None, "Bearer ", f"Basic {UNKNOWN_KEY}"])
async def test_sidecar_keys_refuse_unknown_client_keys_with_401(
    upstream: FakeUpstream,
    start_celgate: StartCelgate,
    http: aiohttp.ClientSession,
    policy_dir: Path,
    authorization: str | None,
) -> None:
    celgate = await start_celgate(
        upstream=upstream.base_url, no_policy=False, policies=policy_dir, upstream_api_key=Secret(UPSTREAM_KEY)
    )
    headers = {"Authorization": authorization} if authorization else {}
    for method, path, body in [
        ("POST", "/chat/completions", {"model": "fake-model", "messages": MESSAGES}),
        ("POST", "/chat/completions", {"model": "fake-model", "messages": MESSAGES, "stream": True}),
        ("GET", "/models", None),
        ("POST", "/embeddings", {"input": "x"}),
    ]:
        async with http.request(method, celgate.url + path, json=body, headers=headers) as response:
            assert response.status == 401, path
            error = assert_openai_error(await response.json(), type_="authentication_error", code="invalid_api_key")
            assert UNKNOWN_KEY not in error["message"]
    assert upstream.requests == []


async def test_sidecar_keys_401_reaches_the_openai_client(
    upstream: FakeUpstream, start_celgate: StartCelgate, oai: OpenAIFactory, policy_dir: Path
) -> None:
    celgate = await start_celgate(
        upstream=upstream.base_url, no_policy=False, policies=policy_dir, upstream_api_key=Secret(UPSTREAM_KEY)
    )
    with pytest.raises(openai.AuthenticationError) as info:
        await oai(celgate.url, api_key=UNKNOWN_KEY).chat.completions.create(model="fake-model", messages=MESSAGES)
    assert info.value.status_code == 401


async def test_sidecar_keys_need_a_policy(start_celgate: StartCelgate, upstream: FakeUpstream) -> None:
    with pytest.raises(SettingsError, match="principals"):
        await start_celgate(upstream=upstream.base_url, no_policy=True, upstream_api_key=Secret(UPSTREAM_KEY))


async def test_keys_never_appear_in_logs_or_metrics(
    upstream: FakeUpstream,
    start_celgate: StartCelgate,
    oai: OpenAIFactory,
    http: aiohttp.ClientSession,
    policy_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    access = tmp_path / "access.log"
    celgate = await start_celgate(
        upstream=upstream.base_url,
        no_policy=False,
        policies=policy_dir,
        upstream_api_key=Secret(UPSTREAM_KEY),
        access_log=str(access),
    )
    await oai(celgate.url, api_key=ALICE_KEY).chat.completions.create(model="fake-model", messages=MESSAGES)
    stream = await oai(celgate.url, api_key=ALICE_KEY).chat.completions.create(
        model="fake-model", messages=MESSAGES, stream=True
    )
    [_ async for _ in stream]
    with pytest.raises(openai.AuthenticationError):
        await oai(celgate.url, api_key=UNKNOWN_KEY).chat.completions.create(model="fake-model", messages=MESSAGES)
    async with http.get(celgate.root + "/metrics") as response:
        metrics_text = await response.text()
    async with http.get(celgate.root + "/admin/metrics") as response:
        metrics_json = await response.text()
    async with http.get(celgate.root + "/admin/policies") as response:
        policies_json = await response.text()
    settings_repr = repr(celgate.app)  # nothing exotic, but cheap to check
    await celgate.stop()
    log_text = access.read_text()
    lines = [json.loads(line) for line in log_text.splitlines()]
    assert len(lines) == 6
    assert {line["type"] for line in lines} == {"access"}
    assert [line["status"] for line in lines[:3]] == [200, 200, 401]
    assert [line["principal"] for line in lines[:2]] == ["alice", "alice"]
    assert all(line["request_id"] for line in lines)
    everything = "\n".join([log_text, metrics_text, metrics_json, policies_json, caplog.text, settings_repr])
    for key in (ALICE_KEY, UPSTREAM_KEY, UNKNOWN_KEY):
        assert key not in everything
    from celgate.proxy.keys import SETTINGS

    assert UPSTREAM_KEY not in repr(celgate.app[SETTINGS]) and UPSTREAM_KEY not in str(celgate.app[SETTINGS])


async def test_access_log_has_one_json_line_per_request(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    access = tmp_path / "access.log"
    celgate = await start_celgate(upstream=upstream.base_url, access_log=str(access))
    async with http.post(
        celgate.url + "/chat/completions",
        json={"model": "fake-model", "messages": MESSAGES},
        headers={"x-request-id": "log-1"},
    ):
        pass
    async with http.post(
        celgate.url + "/chat/completions",
        json={"model": "fake-model", "messages": MESSAGES, "stream": True},
        headers={"x-request-id": "log-2"},
    ) as r:
        await r.read()
    async with http.post(celgate.url + "/chat/completions", data=b"{", headers={"x-request-id": "log-3"}):
        pass
    await celgate.stop()
    lines = [json.loads(line) for line in access.read_text().splitlines()]
    assert [(e["request_id"], e["method"], e["path"], e["status"], e["model"], e["stream"]) for e in lines] == [
        ("log-1", "POST", "/v1/chat/completions", 200, "fake-model", False),
        ("log-2", "POST", "/v1/chat/completions", 200, "fake-model", True),
        ("log-3", "POST", "/v1/chat/completions", 400, "", False),
    ]
    assert all(isinstance(e["duration_ms"], float) and e["duration_ms"] >= 0 for e in lines)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("api-key", ALICE_KEY),
        ("x-api-key", ALICE_KEY),
        ("Authorization", f"bearer {ALICE_KEY}"),
        ("Authorization", f"Bearer  {ALICE_KEY}"),
        ("Authorization", f"Bearer\t{ALICE_KEY}"),  # an upstream splitting on any whitespace reads alice's key
        ("Authorization", ALICE_KEY),
    ],
)
async def test_the_principal_comes_from_every_credential_header(
    upstream: FakeUpstream,
    start_celgate: StartCelgate,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    header: str,
    value: str,
) -> None:
    """A key in any header or spelling an upstream may honour is alice, not anonymous: her limits hold."""
    directory = tmp_path / "p"
    directory.mkdir()
    (directory / "p.yaml").write_text(
        "version: 1\ndefaults:\n  decision: deny\nprincipals:\n  - id: alice\n"
        f"    key_sha256: {hashlib.sha256(ALICE_KEY.encode()).hexdigest()}\n"
        "rules:\n  - name: alice-small-models\n    on: request\n    principals: [alice]\n    models: ['small-*']\n"
        "    effect: allow\n  - name: anonymous-anything\n    on: request\n    principals: [anonymous]\n"
        "    effect: allow\n"
    )
    celgate = await start_celgate(upstream=upstream.base_url, no_policy=False, policies=directory)
    body = {"model": "big-model", "messages": MESSAGES}
    async with http.post(celgate.url + "/chat/completions", json=body, headers={header: value}) as response:
        assert response.status == 403  # alice, not anonymous
    assert upstream.requests == []


async def test_two_different_credentials_are_a_400(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"Bearer {ALICE_KEY}", "api-key": UNKNOWN_KEY}
    async with http.post(
        celgate.url + "/chat/completions", json={"model": "m", "messages": MESSAGES}, headers=headers
    ) as response:
        assert response.status == 400
        assert_openai_error(await response.json(), code="conflicting_credentials")
    same = {"Authorization": f"Bearer {ALICE_KEY}", "api-key": ALICE_KEY}
    async with http.post(
        celgate.url + "/chat/completions", json={"model": "m", "messages": MESSAGES}, headers=same
    ) as response:
        assert response.status == 200
    assert len(upstream.requests) == 1


async def test_sidecar_mode_removes_every_client_credential(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession, policy_dir: Path
) -> None:
    celgate = await start_celgate(
        upstream=upstream.base_url, no_policy=False, policies=policy_dir, upstream_api_key=Secret(UPSTREAM_KEY)
    )
    async with http.post(
        celgate.url + "/embeddings", json={"input": "x"}, headers={"api-key": ALICE_KEY, "x-api-key": ALICE_KEY}
    ) as response:
        assert response.status == 200
    sent = lower(upstream.requests[-1].headers)
    assert sent["authorization"] == f"Bearer {UPSTREAM_KEY}" and "api-key" not in sent and "x-api-key" not in sent
