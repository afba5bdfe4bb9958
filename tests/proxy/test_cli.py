"""The ``celgate`` command (real subprocesses) and settings precedence (``load_settings``)."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from celgate.proxy import __version__
from celgate.proxy.settings import (
    DEFAULT_UPSTREAM,
    OPTIONS,
    Secret,
    Settings,
    SettingsError,
    UpstreamTimeouts,
    load_settings,
)
from tests.helpers import REPO, OpenAIFactory, free_port, write_yaml
from tests.helpers.fakeupstream import FakeUpstream
from tests.helpers.process import CELGATE, Running, clean_env, refused, stop


def allow_all_policy(directory: Path) -> Path:
    return write_yaml(directory, "version: 1\ndefaults:\n  decision: allow\n", "allow.yaml").parent


# ------------------------------------------------------------------------------------ the command


def test_version() -> None:
    result = subprocess.run([str(CELGATE), "--version"], capture_output=True, text=True, timeout=30, env=clean_env())
    assert result.returncode == 0
    assert result.stdout.strip() == f"celgate {__version__}"
    assert importlib.metadata.version("celgate") == __version__  # pyproject.toml's dynamic version reads it


def test_serve_help_lists_the_flags() -> None:
    result = subprocess.run(
        [str(CELGATE), "serve", "--help"], capture_output=True, text=True, timeout=30, env=clean_env()
    )
    assert result.returncode == 0
    for flag in (
        "--host",
        "--port",
        "--upstream",
        "--policies",
        "--no-policy",
        "--agents",
        "--upstream-api-key-env",
        "--connect-timeout",
        "--first-byte-timeout",
        "--idle-timeout",
        "--max-body-bytes",
        "--log-level",
        "--log-format",
        "--access-log",
        "--config",
    ):
        assert flag in result.stdout, flag


@pytest.mark.parametrize("policy", ["--no-policy", "--policies"])
async def test_serve_proxies_to_the_upstream(
    serve: Callable[..., asyncio.Future[Running]],
    upstream: FakeUpstream,
    tmp_path: Path,
    policy: str,
    oai: OpenAIFactory,
) -> None:
    """The benchmark's invocation: --host, --port, --upstream and --policies DIR (or --no-policy)."""
    port = free_port()
    policy_args = ["--no-policy"] if policy == "--no-policy" else ["--policies", str(allow_all_policy(tmp_path / "p"))]
    running = await serve(
        "--host", "127.0.0.1", "--port", str(port), "--upstream", upstream.base_url, *policy_args, port=port
    )
    client = oai(running.root + "/v1", api_key="sk-cli")
    result = await client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-request-id": "cli-req-1"}
    )
    assert result.choices[0].message.content == "Hello world"
    stream = await client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "Hello world"
    assert [r.path for r in upstream.requests] == ["/v1/chat/completions"] * 2
    assert await stop(running) == 0  # SIGTERM: a clean shutdown
    access = [
        json.loads(line) for line in (running.logs / "stdout.log").read_text().splitlines() if line.startswith("{")
    ]
    assert any(line.get("request_id") == "cli-req-1" and line.get("status") == 200 for line in access)
    assert "sk-cli" not in running.output()


async def test_serve_demo_streams_and_calls_tools(
    serve: Callable[..., asyncio.Future[Running]], oai: OpenAIFactory
) -> None:
    if not any((REPO / "policies").glob("*.yaml")):
        pytest.skip("the repository's starter policy is not there yet")
    port = free_port()
    running = await serve(
        "--upstream", "demo", "--port", str(port), "--policies", "policies", "--demo-delay-ms", "1", port=port, cwd=REPO
    )
    client = oai(running.root + "/v1", api_key="sk-anything")
    stream = await client.chat.completions.create(
        model="demo", stream=True, messages=[{"role": "user", "content": "Hello there"}]
    )
    chunks = [chunk async for chunk in stream]
    assert len(chunks) > 2  # streamed word by word
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: Hello there"
    weather = await client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "What is the weather in Oslo?"}]
    )
    calls = weather.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].function.arguments)["location"] == "Oslo"
    stream = await client.chat.completions.create(
        model="demo", stream=True, messages=[{"role": "user", "content": "weather in Paris?"}]
    )
    names = [
        tc.function.name
        async for c in stream
        for ch in c.choices
        for tc in (ch.delta.tool_calls or [])
        if tc.function and tc.function.name
    ]
    assert names == ["get_weather"]
    shell = await client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "open a shell"}])
    assert shell.choices[0].message.tool_calls is None  # the starter policy strips shell.exec ...
    assert shell.choices[0].finish_reason == "stop"
    assert "denied" in (shell.choices[0].message.content or "")  # ... and says why
    assert "demo" in [model.id async for model in client.models.list()]


async def test_serve_refuses_to_start_without_a_policy_dir(tmp_path: Path) -> None:
    returncode, message = await refused("--port", str(free_port()), cwd=tmp_path)
    assert returncode not in (0, None)
    assert "policy directory" in message and "policies" in message
    assert "--no-policy" in message


async def test_serve_refuses_to_start_with_a_broken_policy(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.yaml").write_text("version: 1\nrules:\n  - name: x\n    on: request\n    effect: maybe\n")
    returncode, stderr = await refused("--port", str(free_port()), "--policies", str(broken), cwd=tmp_path)
    assert returncode not in (0, None)
    assert "bad.yaml" in stderr


async def test_serve_rejects_a_bad_setting_with_its_source(tmp_path: Path) -> None:
    returncode, stderr = await refused("--no-policy", cwd=tmp_path, env=clean_env(CELGATE_PORT="eighty"))
    assert returncode == 2
    assert "port" in stderr and "environment" in stderr


async def test_port_flag_beats_celgate_port(
    serve: Callable[..., asyncio.Future[Running]], upstream: FakeUpstream
) -> None:
    env_port, flag_port = free_port(), free_port()
    running = await serve(
        "--port",
        str(flag_port),
        "--no-policy",
        "--upstream",
        upstream.base_url,
        port=flag_port,
        env=clean_env(CELGATE_PORT=str(env_port)),
    )
    assert running.port == flag_port
    with pytest.raises(OSError):
        _, writer = await asyncio.open_connection("127.0.0.1", env_port)
        writer.close()


async def test_celgate_port_beats_celgate_yaml(
    serve: Callable[..., asyncio.Future[Running]], upstream: FakeUpstream, tmp_path: Path
) -> None:
    env_port, file_port = free_port(), free_port()
    (tmp_path / "celgate.yaml").write_text(f"port: {file_port}\nno_policy: true\n")
    await serve(port=env_port, env=clean_env(CELGATE_PORT=str(env_port), CELGATE_UPSTREAM=upstream.base_url))


async def test_celgate_yaml_is_used_without_env_or_flag(
    serve: Callable[..., asyncio.Future[Running]], upstream: FakeUpstream, tmp_path: Path
) -> None:
    file_port = free_port()
    (tmp_path / "celgate.yaml").write_text(f"port: {file_port}\nno_policy: true\nupstream: {upstream.base_url}\n")
    await serve(port=file_port)


# --------------------------------------------------------------------------------- load_settings


@pytest.fixture
def in_empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no ./celgate.yaml unless a test writes one
    return tmp_path


def test_defaults(in_empty_dir: Path) -> None:
    settings = load_settings({}, environ={})
    assert settings == Settings()
    assert (settings.host, settings.port, settings.upstream) == ("127.0.0.1", 8080, DEFAULT_UPSTREAM)
    assert settings.policies == Path("policies") and settings.agents == Path("agents")
    assert settings.timeouts == UpstreamTimeouts()
    assert settings.max_body_bytes == 10 * 1024 * 1024


def test_every_field_is_a_documented_setting_or_derived_from_one() -> None:
    """A field added without ``_setting`` metadata would be neither settable nor in the README table."""
    settable = {option.path[0] for option in OPTIONS.values()}
    assert {f.name for f in dataclasses.fields(Settings)} - settable == {"upstream_api_key", "admin_token"}
    for option in OPTIONS.values():
        assert option.help and not {"\n", "|"} & set(option.help), option.name  # one Markdown table cell


def test_flags_beat_env_beat_file_beat_defaults(in_empty_dir: Path) -> None:
    (in_empty_dir / "celgate.yaml").write_text(
        "port: 1111\nhost: 0.0.0.0\nlog-level: warning\nmax_body_bytes: 4096\nidle_timeout: 7\n"
    )
    environ = {"CELGATE_PORT": "2222", "CELGATE_LOG_LEVEL": "error", "CELGATE_IDLE_TIMEOUT": "8"}
    flags = {"port": "3333", "host": None, "log_level": None}
    settings = load_settings(flags, environ=environ)
    assert settings.port == 3333  # flag
    assert settings.log_level == "error"  # env (the flag is unset)
    assert settings.timeouts.idle == 8.0  # env
    assert settings.host == "0.0.0.0"  # file
    assert settings.max_body_bytes == 4096  # file
    assert settings.timeouts.connect == 10.0 and settings.log_format == "json"  # defaults
    assert load_settings({}, environ=environ).port == 2222
    assert load_settings({}, environ={}).port == 1111


def test_config_flag_names_the_file(in_empty_dir: Path) -> None:
    config = in_empty_dir / "elsewhere.yaml"
    config.write_text("port: 4444\n")
    assert load_settings({}, environ={}, config_file=config).port == 4444
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings({}, environ={}, config_file=in_empty_dir / "missing.yaml")


def test_openai_base_url_is_the_upstream_fallback(in_empty_dir: Path) -> None:
    openai_env = {"OPENAI_BASE_URL": "http://127.0.0.1:9999/v1"}
    assert load_settings({}, environ=openai_env).upstream == "http://127.0.0.1:9999/v1"
    assert load_settings({}, environ={**openai_env, "CELGATE_UPSTREAM": "http://env/v1"}).upstream == "http://env/v1"
    assert load_settings({"upstream": "http://flag/v1"}, environ=openai_env).upstream == "http://flag/v1"
    (in_empty_dir / "celgate.yaml").write_text("upstream: http://file/v1\n")
    assert load_settings({}, environ=openai_env).upstream == "http://file/v1"


def test_booleans_and_choices_from_env(in_empty_dir: Path) -> None:
    settings = load_settings(
        {},
        environ={
            "CELGATE_WATCH": "off",
            "CELGATE_NO_POLICY": "yes",
            "CELGATE_LOG_FORMAT": "TEXT",
            "CELGATE_ACCESS_LOG": "off",
        },
    )
    assert settings.watch is False and settings.no_policy is True
    assert settings.log_format == "text" and settings.access_log is None


def test_upstream_api_key_env(in_empty_dir: Path) -> None:
    settings = load_settings({"upstream_api_key_env": "MY_UPSTREAM_KEY"}, environ={"MY_UPSTREAM_KEY": "sk-secret-1"})
    assert settings.upstream_api_key == Secret("sk-secret-1") and settings.sidecar_keys
    assert "sk-secret-1" not in repr(settings) and "sk-secret-1" not in str(settings.upstream_api_key)
    with pytest.raises(SettingsError, match="MY_UPSTREAM_KEY"):
        load_settings({"upstream_api_key_env": "MY_UPSTREAM_KEY"}, environ={})


@pytest.mark.parametrize(
    ("flags", "environ", "file", "match"),
    [
        ({}, {"CELGATE_PORT": "x"}, None, "port from environment"),
        ({"port": "70000"}, {}, None, "port must be"),
        ({"upstream": "ftp://x"}, {}, None, "upstream must be"),
        ({"max_body_bytes": "10"}, {}, None, "max_body_bytes"),
        ({"idle_timeout": "0"}, {}, None, "idle_timeout"),
        ({"log_format": "xml"}, {}, None, "log_format"),
        ({}, {}, "prot: 1\n", "unknown setting"),
        ({}, {}, "port: [1\n", "not valid YAML"),
        ({}, {}, "port: abc\n", "celgate.yaml"),
    ],
)
def test_bad_settings_name_key_and_source(
    in_empty_dir: Path, flags: dict[str, str], environ: dict[str, str], file: str | None, match: str
) -> None:
    if file is not None:
        (in_empty_dir / "celgate.yaml").write_text(file)
    with pytest.raises(SettingsError, match=match):
        load_settings(flags, environ=environ)


def test_demo_upstream_is_accepted(in_empty_dir: Path) -> None:
    assert load_settings({"upstream": "demo"}, environ={}).upstream == "demo"
