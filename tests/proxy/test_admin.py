"""The admin surface: the admin token, refusing to listen off loopback without one, and ``redact``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from celgate.proxy.accesslog import JsonLineWriter, log_handler
from celgate.proxy.keys import ENFORCER
from celgate.proxy.redaction import REDACTED, holding_secrets, redact, redact_json
from celgate.proxy.settings import Secret, Settings, SettingsError, check_listener, is_loopback, load_settings
from tests.helpers import Celgate, StartCelgate, assert_openai_error, free_port, write_policy
from tests.helpers.fakeupstream import FakeUpstream
from tests.helpers.process import Running, clean_env, refused

ADMIN_TOKEN = "admin-token-0123456789abcdef"
ADMIN_ROUTES = ("/metrics", "/admin/metrics", "/admin/policies", "/admin/agents", "/admin/agents/errors")
PROBES = ("/healthz", "/readyz")


# ------------------------------------------------------------------------------ settings


@pytest.fixture
def in_empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no ./celgate.yaml unless a test writes one
    return tmp_path


def test_admin_token_env_from_flag_env_and_file(in_empty_dir: Path) -> None:
    environ = {"MY_ADMIN_TOKEN": ADMIN_TOKEN}
    by_flag = load_settings({"admin_token_env": "MY_ADMIN_TOKEN"}, environ=environ)
    by_env = load_settings({}, environ={**environ, "CELGATE_ADMIN_TOKEN_ENV": "MY_ADMIN_TOKEN"})
    (in_empty_dir / "celgate.yaml").write_text("admin_token_env: MY_ADMIN_TOKEN\n")
    by_file = load_settings({}, environ=environ)
    for settings in (by_flag, by_env, by_file):
        assert settings.admin_token_env == "MY_ADMIN_TOKEN" and settings.admin_token == Secret(ADMIN_TOKEN)
        assert ADMIN_TOKEN not in repr(settings) and ADMIN_TOKEN not in str(settings.admin_token)
    assert load_settings({}, environ=environ).admin_token == Secret(ADMIN_TOKEN)  # the file's
    (in_empty_dir / "celgate.yaml").unlink()
    assert load_settings({}, environ=environ).admin_token is None


@pytest.mark.parametrize("value", [None, "", "short-token"])
def test_a_missing_or_short_admin_token_is_refused(in_empty_dir: Path, value: str | None) -> None:
    environ = {} if value is None else {"MY_ADMIN_TOKEN": value}
    with pytest.raises(SettingsError, match=r"MY_ADMIN_TOKEN.*at least 16") as info:
        load_settings({"admin_token_env": "MY_ADMIN_TOKEN"}, environ=environ)
    assert value is None or not value or value not in str(info.value)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True), ("127.3.4.5", True), ("localhost", True), ("LOCALHOST", True), ("::1", True),
        ("[::1]", True), ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.5", False), ("192.168.1.1", False),
        ("fe80::1", False), ("example.com", False), ("localhost.example.com", False),
    ],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_off_loopback_needs_an_admin_token() -> None:
    with pytest.raises(SettingsError, match="--admin-token-env"):
        check_listener(Settings(host="0.0.0.0"))
    check_listener(Settings(host="0.0.0.0", admin_token=Secret(ADMIN_TOKEN)))
    check_listener(Settings(host="127.0.0.1"))


async def test_create_app_refuses_a_public_listener_without_an_admin_token(
    start_celgate: StartCelgate, upstream: FakeUpstream
) -> None:
    with pytest.raises(SettingsError, match="not a loopback address"):
        await start_celgate(upstream=upstream.base_url, host="0.0.0.0")
    await start_celgate(upstream=upstream.base_url, host="0.0.0.0", admin_token=Secret(ADMIN_TOKEN))


async def test_serve_on_0_0_0_0_without_an_admin_token_exits_2(tmp_path: Path) -> None:
    returncode, message = await refused("--host", "0.0.0.0", "--port", str(free_port()), "--no-policy", cwd=tmp_path)
    assert returncode == 2
    assert "0.0.0.0" in message and "--admin-token-env" in message and "CELGATE_ADMIN_TOKEN_ENV" in message


async def test_the_container_command_needs_its_admin_token(tmp_path: Path) -> None:
    """The Containerfile's CMD (its flags, here): without CELGATE_ADMIN_TOKEN it says so and exits 2."""
    returncode, stderr = await refused(
        "--host", "0.0.0.0", "--port", str(free_port()), "--no-policy", "--admin-token-env", "CELGATE_ADMIN_TOKEN",
        cwd=tmp_path,
    )  # fmt: skip
    assert returncode == 2
    assert "CELGATE_ADMIN_TOKEN" in stderr


async def test_serve_on_0_0_0_0_with_an_admin_token(
    serve: Callable[..., asyncio.Future[Running]], upstream: FakeUpstream
) -> None:
    env = clean_env(CELGATE_ADMIN_TOKEN_ENV="GATE_ADMIN", GATE_ADMIN=ADMIN_TOKEN)
    running = await serve(
        "--host",
        "0.0.0.0",
        "--no-policy",
        "--upstream",
        upstream.base_url,
        "--log-level",
        "debug",
        env=env,
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(running.root + "/metrics") as response:
            assert response.status == 401
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with http.get(running.root + "/metrics", headers=headers) as response:
            assert response.status == 200 and "celgate_requests_total" in await response.text()
    assert ADMIN_TOKEN not in running.output()


# ------------------------------------------------------------------------------ the token on the wire


@pytest.fixture
async def guarded(start_celgate: StartCelgate, upstream: FakeUpstream) -> Celgate:
    return await start_celgate(upstream=upstream.base_url, admin_token=Secret(ADMIN_TOKEN))


@pytest.mark.parametrize("path", ADMIN_ROUTES)
@pytest.mark.parametrize(
    "authorization",
    [None, "", f"Bearer {ADMIN_TOKEN}x", f"Bearer {ADMIN_TOKEN[:-1]}", f"Basic {ADMIN_TOKEN}", ADMIN_TOKEN, "Bearer"],
)
async def test_admin_routes_refuse_a_missing_or_wrong_token(
    guarded: Celgate, http: aiohttp.ClientSession, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with http.get(guarded.root + path, headers=headers) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        error = assert_openai_error(await response.json(), type_="authentication_error", code="invalid_admin_token")
    assert ADMIN_TOKEN not in error["message"]


@pytest.mark.parametrize("path", ADMIN_ROUTES)
async def test_admin_routes_answer_the_token(guarded: Celgate, http: aiohttp.ClientSession, path: str) -> None:
    for scheme in ("Bearer", "bearer"):
        async with http.get(guarded.root + path, headers={"Authorization": f"{scheme} {ADMIN_TOKEN}"}) as response:
            assert response.status == 200, await response.text()


@pytest.mark.parametrize("path", PROBES)
async def test_probes_stay_open(guarded: Celgate, http: aiohttp.ClientSession, path: str) -> None:
    async with http.get(guarded.root + path) as response:
        assert response.status == 200


async def test_the_token_is_not_a_v1_credential(
    guarded: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    """The admin token only guards the admin routes: /v1 works without it, as before."""
    async with http.post(guarded.url + "/chat/completions", json={"model": "m", "messages": []}) as response:
        assert response.status == 200
    assert len(upstream.requests) == 1


async def test_without_a_token_on_loopback_admin_routes_are_open(celgate: Celgate, http: aiohttp.ClientSession) -> None:
    for path in ADMIN_ROUTES:
        async with http.get(celgate.root + path) as response:
            assert response.status == 200, path


# ------------------------------------------------------------------------------ redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("openai key sk-abcdefghijklmnop0123 rejected", "sk-abcdefghijklmnop0123"),
        ("project key sk-proj-AbC_dEf-0123456789xyz", "sk-proj-AbC_dEf-0123456789xyz"),
        ("header Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc-def_ghi", "eyJhbGciOiJIUzI1NiJ9.e30.abc-def_ghi"),
        ("Authorization: Basic dXNlcjpodW50ZXIy", "dXNlcjpodW50ZXIy"),
        ("{'authorization': 'Token abc123secretvalue'}", "abc123secretvalue"),
        ('{"Proxy-Authorization": "Negotiate c2VjcmV0Cg"}', "c2VjcmV0Cg"),
        ("could not connect to postgresql://app:hunter2pw@db.internal:5432/app", "hunter2pw"),
        ("redis://:r3dis-pass@cache:6379/0", "r3dis-pass"),
        ("amqp://user:p@ss@mq.internal/vhost", "p@ss"),
        ("GET /x?user=bob&password=pw-in-query&next=1", "pw-in-query"),
        ("passwd=pw-kv-value;", "pw-kv-value"),
        ("client_secret=the-client-secret", "the-client-secret"),
        ("access_token=tok-value-123&x=1", "tok-value-123"),
        ("api_key: 'quoted key value'", "quoted key value"),
        ('{"api-key": "json-api-key-value"}', "json-api-key-value"),
        ('DB_PASSWORD = "unterminated secret', "unterminated secret"),
        ("aws AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----", "MIIEpAIBAAKCAQEA"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk (cut)", "b3BlbnNzaC1rZXk"),
    ],
)
def test_redact_masks_secret_shapes(text: str, secret: str) -> None:
    redacted = redact(text)
    assert secret not in redacted and REDACTED in redacted
    assert redact(redacted) == redacted  # idempotent


def test_redact_keeps_the_context() -> None:
    assert redact("connect to postgresql://app:pw1@db:5432/x failed") == (
        f"connect to postgresql://app:{REDACTED}@db:5432/x failed"
    )
    assert redact("Authorization: Bearer abc\nnext line") == f"Authorization: {REDACTED}\nnext line"
    assert redact("token=abc&page=2") == f"token={REDACTED}&page=2"
    assert redact("-----BEGIN PRIVATE KEY-----\nAAA\n-----END PRIVATE KEY-----\nafter").endswith("\nafter")


@pytest.mark.parametrize(
    "text",
    [
        "gpt-4o-mini", "/v1/chat/completions", "http://127.0.0.1:8080/v1", "max_tokens=5", "task-force-alpha-1234",
        "desk-lamp-0123456789", "mail bob@example.com at http://host/x", "policy version 3f2a9c",
        "Secret('**********')",
    ],
)  # fmt: skip
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_redact_masks_held_values_and_principal_keys_while_held() -> None:
    principal_key = "plain-principal-key-42"  # no secret shape: known only by its sha256
    digest = hashlib.sha256(principal_key.encode()).hexdigest()

    def is_key(token: str) -> bool:
        return hashlib.sha256(token.encode()).hexdigest() == digest

    text = f"upstream {ADMIN_TOKEN} by {principal_key}. key={principal_key}, path /{principal_key}/x"
    with holding_secrets([ADMIN_TOKEN], is_key):
        redacted = redact(text)
        assert ADMIN_TOKEN not in redacted and principal_key not in redacted
        assert redacted == f"upstream {REDACTED} by {REDACTED}. key={REDACTED}, path /{REDACTED}/x"
        with holding_secrets(["another-held-secret"], lambda token: False):  # apps nest and leave in any order
            assert redact("another-held-secret and " + ADMIN_TOKEN) == f"{REDACTED} and {REDACTED}"
    assert redact(text) == text  # released with the app


def test_redact_json_reaches_every_string() -> None:
    body = {"errors": [{"message": "sk-abcdefghijklmnop0123", "n": 3, "ok": True, "none": None}],
            "password=x": ("token=y",)}  # fmt: skip
    assert redact_json(body) == {
        "errors": [{"message": REDACTED, "n": 3, "ok": True, "none": None}],
        f"password={REDACTED}": [f"token={REDACTED}"],
    }


# ------------------------------------------------------------------------------ log and audit output


@contextlib.contextmanager
def captured(fmt: str) -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    logger = logging.getLogger("celgate.test-redaction")
    handler = log_handler(fmt, buffer)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_lines_are_redacted(fmt: str) -> None:
    logger = logging.getLogger("celgate.test-redaction")
    with captured(fmt) as buffer:
        logger.error("upstream said %s", 'Authorization: "Bearer sk-abcdefghijklmnop0123"',
                     extra={"fields": {"url": "https://u:field-pw@h/x"}})  # fmt: skip
        try:
            raise RuntimeError("cannot reach postgresql://app:exc-pw-123@db/app")
        except RuntimeError:
            logger.exception("agent failed")
    output = buffer.getvalue()
    for secret in ("sk-abcdefghijklmnop0123", "exc-pw-123"):
        assert secret not in output
    assert output.count(REDACTED) >= 2 and "RuntimeError" in output
    if fmt == "json":
        lines = [json.loads(line) for line in output.splitlines()]  # masking never breaks the JSON
        assert lines[0]["url"] == f"https://u:{REDACTED}@h/x"
        assert "exc-pw-123" not in lines[1]["exc"] and "Traceback" in lines[1]["exc"]


async def test_audit_records_are_redacted(tmp_path: Path) -> None:
    target = tmp_path / "audit.jsonl"
    writer = JsonLineWriter(str(target))
    writer.start()
    writer.write({"arguments": '{"dsn": "mysql://root:audit-pw@db/x"}', "subject": "sk-abcdefghijklmnop0123"})
    await writer.close()
    record = json.loads(target.read_text())
    assert record == {"arguments": f'{{"dsn": "mysql://root:{REDACTED}@db/x"}}', "subject": REDACTED}


# ------------------------------------------------------------------------------ POST /admin/reload


async def test_admin_reload_applies_an_edited_policy_and_says_what_is_active(
    start_celgate: StartCelgate, upstream: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    policies = write_policy(tmp_path, "version: 1\ndefaults:\n  decision: allow\n")
    gate = await start_celgate(
        upstream=upstream.base_url, no_policy=False, policies=policies, admin_token=Secret(ADMIN_TOKEN)
    )
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    before = gate.app[ENFORCER].policy().version
    (policies / "policy.yaml").write_text("version: 1\ndefaults:\n  decision: deny\n")
    async with http.post(gate.root + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
        assert response.status == 200
        body = await response.json()
    assert body["policy"]["ok"] is True and body["policy"]["error"] is None
    assert body["policy"]["version"] != before and body["agents"] is None and body["other_workers"] == "none"
    async with http.post(gate.url + "/chat/completions", json=chat) as response:
        assert response.status == 403


async def test_admin_reload_of_a_broken_policy_keeps_the_last_good_one(
    start_celgate: StartCelgate, upstream: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    policies = write_policy(tmp_path, "version: 1\ndefaults:\n  decision: allow\n")
    gate = await start_celgate(upstream=upstream.base_url, no_policy=False, policies=policies)
    before = gate.app[ENFORCER].policy().version
    broken = "version: 1\nrules: [{name: r, on: request, when: 'nope ==', effect: deny}]\n"
    (policies / "policy.yaml").write_text(broken)
    async with http.post(gate.root + "/admin/reload") as response:
        assert response.status == 200
        body = await response.json()
    assert body["policy"]["ok"] is False and body["policy"]["version"] == before and body["policy"]["error"]


@pytest.mark.parametrize("authorization", [None, f"Bearer {ADMIN_TOKEN}x", f"Basic {ADMIN_TOKEN}"])
async def test_admin_reload_refuses_a_missing_or_wrong_token(
    guarded: Celgate, http: aiohttp.ClientSession, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with http.post(guarded.root + "/admin/reload", headers=headers) as response:
        assert response.status == 401
        assert_openai_error(await response.json(), type_="authentication_error", code="invalid_admin_token")


async def test_admin_reload_is_post_only(guarded: Celgate, http: aiohttp.ClientSession) -> None:
    async with http.get(guarded.root + "/admin/reload") as response:
        assert response.status == 405 and response.headers["Allow"] == "POST"
