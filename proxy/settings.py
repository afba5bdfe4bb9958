"""celgate's configuration: one frozen value, built once, passed explicitly.

Precedence, highest first: command-line flags > ``CELGATE_*`` environment
variables > ``celgate.yaml`` (or ``--config FILE``) > the defaults below.
``OPENAI_BASE_URL`` in the sidecar's own environment is read as the upstream
when neither a flag, ``CELGATE_UPSTREAM`` nor the file sets one.

This is the only module that reads ``os.environ`` for celgate's own settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEFAULT_UPSTREAM",
    "DEMO_UPSTREAM",
    "Secret",
    "Settings",
    "SettingsError",
    "UpstreamTimeouts",
    "add_serve_arguments",
    "check_listener",
    "is_loopback",
    "load_settings",
]

DEFAULT_UPSTREAM = "https://api.openai.com/v1"
DEMO_UPSTREAM = "demo"
DEFAULT_CONFIG_FILE = "celgate.yaml"
ENV_PREFIX = "CELGATE_"
MIN_ADMIN_TOKEN_CHARS = 16


class SettingsError(ValueError):
    """A setting has a value celgate cannot use; the message names key and source."""


@dataclass(frozen=True, slots=True)
class Secret:
    """A value that must never be printed: ``repr`` masks it."""

    value: str

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class UpstreamTimeouts:
    """Explicit upstream timeouts in seconds, so celgate ends a stalled upstream.

    ``connect``: TCP/TLS connect. ``first_byte``: from sending the request to
    the response headers. ``idle``: the longest silence between two reads of a
    response body (between SSE events). There is no total timeout: a healthy
    long stream is never cut.
    """

    connect: float = 10.0
    first_byte: float = 300.0
    idle: float = 120.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``celgate serve`` needs; see the README's configuration table."""

    host: str = "127.0.0.1"
    port: int = 8080
    upstream: str = DEFAULT_UPSTREAM
    policies: Path = Path("policies")
    no_policy: bool = False
    cel_backend: str = "cel-expr"
    agents: Path = Path("agents")
    agents_model: str | None = None
    agents_max_turns: int = 10
    agents_api: str = "chat"
    watch: bool = True
    upstream_api_key_env: str | None = None
    upstream_api_key: Secret | None = field(default=None, repr=False)
    admin_token_env: str | None = None
    admin_token: Secret | None = field(default=None, repr=False)
    timeouts: UpstreamTimeouts = UpstreamTimeouts()
    max_body_bytes: int = 10 * 1024 * 1024
    client_timeout: float = 30.0
    drain_seconds: float = 30.0
    max_concurrent_requests: int = 1024
    max_concurrent_streams: int = 512
    max_held_call_bytes: int = 1024 * 1024
    upstream_check: bool = True
    log_level: str = "info"
    log_format: str = "json"
    access_log: str | None = "-"
    audit_log: str | None = None
    audit_allows: bool = False
    audit_arguments: bool = False
    demo_delay_ms: int = 30

    @property
    def sidecar_keys(self) -> bool:
        """True when celgate holds the upstream key and clients bring their own."""
        return self.upstream_api_key is not None


# name -> (type converter, argparse help). The key is also the flag
# (--max-body-bytes), the env var suffix (CELGATE_MAX_BODY_BYTES) and the
# celgate.yaml key (max_body_bytes).
def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


def _optional_str(value: Any) -> str | None:
    text = str(value).strip()
    return text or None


def _choice(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return text

    return convert


_OPTIONS: dict[str, tuple[Any, str]] = {
    "host": (str, "address to listen on (default 127.0.0.1)"),
    "port": (int, "port to listen on (default 8080)"),
    "upstream": (str, "upstream OpenAI-compatible base URL, or 'demo' for the built-in demo model"),
    "policies": (Path, "policy directory (default ./policies)"),
    "no_policy": (_bool, "run without a policy: everything is allowed"),
    "cel_backend": (_choice("cel-expr", "celpy"), "CEL engine: cel-expr (default) or celpy"),
    "agents": (Path, "drop-in agents directory (default ./agents)"),
    "agents_model": (_optional_str, "model for drop-in agents that set none"),
    "agents_max_turns": (int, "max turns of a drop-in agent run (default 10)"),
    "agents_api": (
        _choice("chat", "responses"),
        "API of drop-in agents' own model calls through celgate: chat (default) or responses",
    ),
    "watch": (_bool, "hot-reload policies and agents on change (default on)"),
    "upstream_api_key_env": (_optional_str, "sidecar-key mode: env var holding the upstream API key"),
    "admin_token_env": (
        _optional_str,
        "env var holding the bearer token /admin/* and /metrics require (required to listen off loopback)",
    ),
    "connect_timeout": (float, "upstream connect timeout, seconds (default 10)"),
    "first_byte_timeout": (float, "upstream time to response headers, seconds (default 300)"),
    "idle_timeout": (float, "longest upstream silence mid-body, seconds (default 120)"),
    "max_body_bytes": (int, "largest accepted request body (default 10 MiB)"),
    "client_timeout": (
        float,
        "seconds a client may take to send a request head, and longest silence mid-body (default 30)",
    ),
    "drain_seconds": (float, "on SIGTERM, how long in-flight requests and streams may finish (default 30)"),
    "max_concurrent_requests": (int, "requests in flight before new ones get 429 (default 1024; 0: no limit)"),
    "max_concurrent_streams": (int, "streams in flight before new ones get 429 (default 512; 0: no limit)"),
    "max_held_call_bytes": (
        int,
        "most a tool call held for a decision may buffer; past it the call is denied (default 1 MiB)",
    ),
    "upstream_check": (_bool, "/readyz checks that the upstream accepts connections (default on)"),
    "log_level": (_choice("debug", "info", "warning", "error"), "log level (default info)"),
    "log_format": (_choice("json", "text"), "log format (default json)"),
    "access_log": (_optional_str, "access log: '-' (stdout, default), a file path, or 'off'"),
    "audit_log": (_optional_str, "policy audit log: '-' (stdout) or a file path (default off)"),
    "audit_allows": (_bool, "also audit allowed decisions"),
    "audit_arguments": (_bool, "include tool-call arguments in audit records"),
    "demo_delay_ms": (int, "demo model: delay between streamed chunks, ms (default 30)"),
}
_TIMEOUT_KEYS = {"connect_timeout": "connect", "first_byte_timeout": "first_byte", "idle_timeout": "idle"}
_BOOL_FLAGS = {"no_policy", "watch", "upstream_check", "audit_allows", "audit_arguments"}


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare every setting as a flag whose default is 'unset' (None)."""
    parser.add_argument("--config", type=Path, default=None, help="settings file (default ./celgate.yaml if present)")
    for name, (_, help_text) in _OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        if name == "no_policy":  # BooleanOptionalAction would read "--no-policy" as policy=False
            parser.add_argument(flag, dest=name, action="store_const", const=True, default=None, help=help_text)
        elif name in _BOOL_FLAGS:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, default=None, help=help_text)


def load_settings(
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge flags > ``CELGATE_*`` env > config file > defaults into ``Settings``."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for source, layer in _layers(flags, environ, config_file):
        for name, raw in layer.items():
            if name in values or raw is None:
                continue
            values[name] = _convert(name, raw, source)
    if "upstream" not in values and environ.get("OPENAI_BASE_URL"):
        values["upstream"] = environ["OPENAI_BASE_URL"]
    return _build(values, environ)


def _layers(
    flags: Mapping[str, Any], environ: Mapping[str, str], config_file: Path | None
) -> Sequence[tuple[str, Mapping[str, Any]]]:
    env_layer = {name: environ[ENV_PREFIX + name.upper()] for name in _OPTIONS if ENV_PREFIX + name.upper() in environ}
    flag_layer = {name: value for name, value in flags.items() if name in _OPTIONS}
    return [("flag", flag_layer), ("environment", env_layer), *_file_layer(config_file)]


def _file_layer(config_file: Path | None) -> list[tuple[str, Mapping[str, Any]]]:
    path = config_file or Path(DEFAULT_CONFIG_FILE)
    if not path.exists():
        if config_file is not None:
            raise SettingsError(f"config file {path} does not exist")
        return []
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping of setting: value")
    normalised = {str(key).replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(set(normalised) - set(_OPTIONS))
    if unknown:
        raise SettingsError(f"{path}: unknown setting(s): {', '.join(unknown)}")
    return [(str(path), normalised)]


def _convert(name: str, raw: Any, source: str) -> Any:
    converter, _ = _OPTIONS[name]
    try:
        return converter(raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{name} from {source}: {exc}") from exc


def _build(values: dict[str, Any], environ: Mapping[str, str]) -> Settings:
    timeouts = dataclasses.replace(
        UpstreamTimeouts(), **{_TIMEOUT_KEYS[k]: values.pop(k) for k in list(values) if k in _TIMEOUT_KEYS}
    )
    for name, seconds in dataclasses.asdict(timeouts).items():
        if seconds <= 0:
            raise SettingsError(f"{name}_timeout must be > 0, got {seconds}")
    if values.get("access_log") == "off":
        values["access_log"] = None
    settings = Settings(**values, timeouts=timeouts)
    _validate(settings)
    if settings.upstream_api_key_env:
        key = environ.get(settings.upstream_api_key_env)
        if not key:
            raise SettingsError(
                f"upstream_api_key_env: environment variable {settings.upstream_api_key_env} is not set or empty"
            )
        settings = dataclasses.replace(settings, upstream_api_key=Secret(key))
    if settings.admin_token_env:
        settings = dataclasses.replace(settings, admin_token=_admin_token(settings.admin_token_env, environ))
    return settings


def _admin_token(name: str, environ: Mapping[str, str]) -> Secret:
    """The admin token from ``$name``; a short one is refused, since it guards an exposed listener."""
    token = environ.get(name, "").strip()
    if len(token) < MIN_ADMIN_TOKEN_CHARS:
        raise SettingsError(
            f"admin_token_env: environment variable {name} must hold a token of at least {MIN_ADMIN_TOKEN_CHARS}"
            " characters (for example: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return Secret(token)


def check_listener(settings: Settings) -> None:
    """Refuse a non-loopback listener without an admin token: /admin/* and /metrics would be open to the network."""
    if settings.admin_token is None and not is_loopback(settings.host):
        raise SettingsError(
            f"host {settings.host!r} is not a loopback address, and /admin/* and /metrics would be open on it:"
            " set --admin-token-env NAME (CELGATE_ADMIN_TOKEN_ENV) to an environment variable holding an admin"
            " token, or listen on 127.0.0.1"
        )


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ``::1`` (IPv4-mapped too); anything else, names included, is not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip().strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _validate(settings: Settings) -> None:
    if not 0 <= settings.port <= 65535:
        raise SettingsError(f"port must be 0..65535, got {settings.port}")
    for name in ("max_concurrent_requests", "max_concurrent_streams"):
        if getattr(settings, name) < 0:
            raise SettingsError(f"{name} must be >= 0 (0: no limit), got {getattr(settings, name)}")
    if settings.drain_seconds < 0:
        raise SettingsError(f"drain_seconds must be >= 0, got {settings.drain_seconds}")
    if settings.client_timeout <= 0:
        raise SettingsError(f"client_timeout must be > 0, got {settings.client_timeout}")
    if settings.max_held_call_bytes < 1024:
        raise SettingsError(f"max_held_call_bytes must be >= 1024, got {settings.max_held_call_bytes}")
    if settings.max_body_bytes < 1024:
        raise SettingsError(f"max_body_bytes must be >= 1024, got {settings.max_body_bytes}")
    if settings.agents_max_turns < 1:
        raise SettingsError(f"agents_max_turns must be >= 1, got {settings.agents_max_turns}")
    upstream = settings.upstream
    if upstream != DEMO_UPSTREAM and not upstream.startswith(("http://", "https://")):
        raise SettingsError(f"upstream must be an http(s) URL or 'demo', got {upstream!r}")
