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
    "OPTIONS",
    "Option",
    "Secret",
    "Settings",
    "SettingsError",
    "UpstreamTimeouts",
    "add_serve_arguments",
    "check_listener",
    "is_loopback",
    "load_settings",
    "markdown_table",
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


_SETTING = "celgate_setting"  # the dataclass field metadata key _setting fills


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


def _workers(value: Any) -> int:
    """A number of worker processes, or ``auto``: the cores this process may run on (its CPU affinity)."""
    if str(value).strip().lower() == "auto":
        return len(os.sched_getaffinity(0))
    return int(value)


@dataclass(frozen=True, slots=True)
class _Meta:
    """What ``_setting`` records on a field: how to read its value, and how to document it."""

    convert: Callable[[Any], Any]
    help: str
    shown: str | None
    metavar: str | None
    name: str | None


def _setting(
    convert: Callable[[Any], Any],
    help: str,
    *,
    shown: str | None = None,
    metavar: str | None = None,
    name: str | None = None,
) -> dict[str, _Meta]:
    """Field metadata that makes a field a user-facing setting, so its default, type and help live in one place.

    ``help`` is one line of Markdown (the README table shows it, ``--help``
    shows it without backticks); ``shown`` replaces the default as printed,
    ``name`` the field's name as the setting's name.
    """
    return {_SETTING: _Meta(convert, help, shown, metavar, name)}


@dataclass(frozen=True, slots=True)
class UpstreamTimeouts:
    """Explicit upstream timeouts in seconds, so celgate ends a stalled upstream.

    ``connect``: TCP/TLS connect. ``first_byte``: from sending the request to
    the response headers. ``idle``: the longest silence between two reads of a
    response body (between SSE events). There is no total timeout: a healthy
    long stream is never cut.
    """

    connect: float = field(
        default=10.0,
        metadata=_setting(float, "seconds to connect to the upstream (TCP and TLS)", name="connect_timeout"),
    )
    first_byte: float = field(
        default=300.0,
        metadata=_setting(
            float, "seconds from a request sent upstream to its response headers", name="first_byte_timeout"
        ),
    )
    idle: float = field(
        default=120.0,
        metadata=_setting(
            float, "longest upstream silence mid-body (between SSE events), seconds", name="idle_timeout"
        ),
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``celgate serve`` needs.

    A field with ``_setting`` metadata is a flag, a ``CELGATE_*`` variable and a
    ``celgate.yaml`` key (``OPTIONS``); ``--help`` and the README's configuration
    table (``markdown_table``) are generated from these fields, so they cannot drift.
    """

    host: str = field(
        default="127.0.0.1",
        metadata=_setting(
            str, "address to listen on (`0.0.0.0` in the container); off loopback it needs `--admin-token-env`"
        ),
    )
    port: int = field(default=8080, metadata=_setting(int, "port to listen on"))
    upstream: str = field(
        default=DEFAULT_UPSTREAM,
        metadata=_setting(
            str,
            "upstream OpenAI-compatible base URL, or `demo` for the built-in demo model",
            shown=f"`$OPENAI_BASE_URL`, else `{DEFAULT_UPSTREAM}`",
        ),
    )
    policies: Path = field(
        default=Path("policies"),
        metadata=_setting(
            Path, "policy directory: every `*.yaml` in it is merged; celgate will not start without it", metavar="DIR"
        ),
    )
    no_policy: bool = field(
        default=False,
        metadata=_setting(
            _bool, "run with no policy: everything is allowed and nothing is decided (`/readyz` says so)"
        ),
    )
    cel_backend: str = field(
        default="cel-expr",
        metadata=_setting(
            _choice("cel-expr", "celpy"), "CEL engine: `cel-expr` (Google's cel-cpp) or `celpy` (pure Python, slower)"
        ),
    )
    agents: Path = field(
        default=Path("agents"),
        metadata=_setting(
            Path,
            "drop-in agents directory; when it is absent there are no agents and the Agents SDK is not imported",
            metavar="DIR",
        ),
    )
    agents_model: str | None = field(
        default=None, metadata=_setting(_optional_str, "model for drop-in agents that set none")
    )
    agents_max_turns: int = field(default=10, metadata=_setting(int, "turn limit of a drop-in agent run"))
    agents_api: str = field(
        default="chat",
        metadata=_setting(
            _choice("chat", "responses"),
            "API of drop-in agents' own model calls through celgate: `chat` (Chat Completions) or `responses`",
        ),
    )
    tools: Path = field(
        default=Path("tools"),
        metadata=_setting(
            Path,
            "gateway tools for agents: Python modules, HTTP tools and MCP servers in YAML (see `docs/tools.md`);"
            " used only when the agents directory exists",
            metavar="DIR",
        ),
    )
    watch: bool = field(
        default=True, metadata=_setting(_bool, "hot-reload policies, agents and gateway tools when their files change")
    )
    upstream_api_key_env: str | None = field(
        default=None,
        metadata=_setting(
            _optional_str,
            "sidecar-key mode: celgate sends the key in `$NAME` upstream; clients authenticate with their own keys",
            metavar="NAME",
        ),
    )
    upstream_api_key: Secret | None = field(default=None, repr=False)
    admin_token_env: str | None = field(
        default=None,
        metadata=_setting(
            _optional_str,
            "`/metrics` and `/admin/*` require `Authorization: Bearer` with the token in `$NAME` (at least"
            f" {MIN_ADMIN_TOKEN_CHARS} characters); required when `--host` is not loopback",
            shown="none (`CELGATE_ADMIN_TOKEN` in the container)",
            metavar="NAME",
        ),
    )
    admin_token: Secret | None = field(default=None, repr=False)
    timeouts: UpstreamTimeouts = UpstreamTimeouts()
    max_body_bytes: int = field(
        default=10 * 1024 * 1024,
        metadata=_setting(int, "larger request bodies get 413 without being read", shown="`10485760` (10 MiB)"),
    )
    client_timeout: float = field(
        default=30.0,
        metadata=_setting(
            float, "seconds a client may take to send a request head, and its longest silence mid-body (408)"
        ),
    )
    drain_seconds: float = field(
        default=30.0,
        metadata=_setting(
            float, "on SIGTERM, seconds in-flight requests and streams get to finish before they are ended"
        ),
    )
    max_concurrent_requests: int = field(
        default=1024,
        metadata=_setting(int, "requests in flight, all principals together, before new ones get 429 (`0`: no limit)"),
    )
    max_concurrent_streams: int = field(
        default=512,
        metadata=_setting(int, "streams in flight, all principals together, before new ones get 429 (`0`: no limit)"),
    )
    max_held_call_bytes: int = field(
        default=1024 * 1024,
        metadata=_setting(
            int,
            "most the tool calls a stream holds for their decisions may buffer together; past it the call that"
            " grows is denied and audited",
            shown="`1048576` (1 MiB)",
        ),
    )
    max_upstream_event_bytes: int = field(
        default=16 * 1024 * 1024,
        metadata=_setting(
            int,
            "largest upstream SSE event celgate relays; past it the stream ends with an SSE `error` event"
            " (`upstream_too_large`) and the upstream connection is closed",
            shown="`16777216` (16 MiB)",
        ),
    )
    max_upstream_body_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata=_setting(
            int,
            "largest upstream body celgate reads whole (governed replies, model lists, stored objects, error"
            " bodies); past it 502 `upstream_too_large` and the upstream connection is closed",
            shown="`67108864` (64 MiB)",
        ),
    )
    upstream_check: bool = field(
        default=True, metadata=_setting(_bool, "`/readyz` checks that the upstream accepts connections")
    )
    log_level: str = field(
        default="info",
        metadata=_setting(
            _choice("debug", "info", "warning", "error"), "`debug`, `info`, `warning` or `error` (stderr)"
        ),
    )
    log_format: str = field(
        default="json", metadata=_setting(_choice("json", "text"), "diagnostic log format: `json` or `text`")
    )
    access_log: str | None = field(
        default="-", metadata=_setting(_optional_str, "one JSON line per request: `-` (stdout), a file path, or `off`")
    )
    audit_log: str | None = field(
        default=None,
        metadata=_setting(_optional_str, "policy audit log (JSON lines): `-` (stdout) or a file path", shown="off"),
    )
    audit_allows: bool = field(default=False, metadata=_setting(_bool, "also audit allowed decisions"))
    audit_arguments: bool = field(
        default=False, metadata=_setting(_bool, "include tool-call arguments in audit records")
    )
    demo_delay_ms: int = field(
        default=30, metadata=_setting(int, "demo model: pause between streamed chunks, milliseconds")
    )
    workers: int = field(
        default=1,
        metadata=_setting(
            _workers,
            "worker processes sharing the port, each with its own policy, agents and limits; `auto`: the usable"
            " cores (see [docs/deploy.md](docs/deploy.md#more-than-one-core---workers))",
        ),
    )

    @property
    def sidecar_keys(self) -> bool:
        """True when celgate holds the upstream key and clients bring their own."""
        return self.upstream_api_key is not None


@dataclass(frozen=True, slots=True)
class Option:
    """One setting as the user sets it: ``--x-y``, ``CELGATE_X_Y`` or ``x_y:`` in celgate.yaml.

    ``path`` is where its value lives in ``Settings`` (``("timeouts", "connect")``).
    """

    name: str
    path: tuple[str, ...]
    default: Any
    convert: Callable[[Any], Any]
    help: str
    shown: str
    metavar: str | None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def negatable(self) -> bool:
        """A switch with a ``--no-`` form; ``--no-policy`` itself is a plain switch."""
        return isinstance(self.default, bool) and not self.name.startswith("no_")

    @property
    def flags(self) -> str:
        """The flag as the README names it: ``--watch / --no-watch``, ``--policies DIR``."""
        if self.negatable:
            return f"{self.flag} / --no-{self.flag[2:]}"
        return f"{self.flag} {self.metavar}" if self.metavar else self.flag

    def help_line(self) -> str:
        """The ``--help`` line: the help and its default, without Markdown."""
        return f"{self.help} (default {self.shown})".replace("`", "").replace("%", "%%")


def _shown(default: Any) -> str:
    if isinstance(default, bool):
        return "on" if default else "off"
    if default is None:
        return "none"
    if isinstance(default, Path):
        return f"`./{default}`"
    if isinstance(default, float):
        return f"`{default:g}`"
    return f"`{default}`"


def _options(cls: type[Any], prefix: tuple[str, ...] = ()) -> list[Option]:
    """Every ``_setting`` field of ``cls``, nested value objects (``timeouts``) included, in field order."""
    options: list[Option] = []
    for f in dataclasses.fields(cls):
        meta: _Meta | None = f.metadata.get(_SETTING)
        if meta is None:
            if dataclasses.is_dataclass(f.default):
                options += _options(type(f.default), (*prefix, f.name))
            continue
        shown = meta.shown or _shown(f.default)
        options.append(
            Option(meta.name or f.name, (*prefix, f.name), f.default, meta.convert, meta.help, shown, meta.metavar)
        )
    return options


OPTIONS: dict[str, Option] = {option.name: option for option in _options(Settings)}


def markdown_table() -> str:
    """The README's configuration table."""
    lines = ["| flag | default | meaning |", "|---|---|---|"]
    lines += [f"| `{o.flags}` | {o.shown} | {o.help} |" for o in OPTIONS.values()]
    return "\n".join(lines)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare every setting as a flag whose default is 'unset' (None), so lower layers can fill it."""
    parser.add_argument("--config", type=Path, default=None, help="settings file (default ./celgate.yaml if present)")
    for o in OPTIONS.values():
        help_text = o.help_line()
        if isinstance(o.default, bool) and not o.negatable:  # "--no-policy" is not "policy=False"
            parser.add_argument(o.flag, dest=o.name, action="store_const", const=True, default=None, help=help_text)
        elif o.negatable:
            parser.add_argument(
                o.flag, dest=o.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(o.flag, dest=o.name, default=None, metavar=o.metavar, help=help_text)


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
    env_layer = {name: environ[ENV_PREFIX + name.upper()] for name in OPTIONS if ENV_PREFIX + name.upper() in environ}
    flag_layer = {name: value for name, value in flags.items() if name in OPTIONS}
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
    unknown = sorted(set(normalised) - set(OPTIONS))
    if unknown:
        raise SettingsError(f"{path}: unknown setting(s): {', '.join(unknown)}")
    return [(str(path), normalised)]


def _convert(name: str, raw: Any, source: str) -> Any:
    try:
        return OPTIONS[name].convert(raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{name} from {source}: {exc}") from exc


def _build(values: dict[str, Any], environ: Mapping[str, str]) -> Settings:
    nested = [name for name in values if OPTIONS[name].path[0] == "timeouts"]
    timeouts = UpstreamTimeouts(**{OPTIONS[name].path[1]: values.pop(name) for name in nested})
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
    for name in ("max_body_bytes", "max_upstream_event_bytes", "max_upstream_body_bytes"):
        if getattr(settings, name) < 1024:
            raise SettingsError(f"{name} must be >= 1024, got {getattr(settings, name)}")
    if settings.workers < 1:
        raise SettingsError(f"workers must be >= 1 or 'auto', got {settings.workers}")
    if settings.agents_max_turns < 1:
        raise SettingsError(f"agents_max_turns must be >= 1, got {settings.agents_max_turns}")
    upstream = settings.upstream
    if upstream != DEMO_UPSTREAM and not upstream.startswith(("http://", "https://")):
        raise SettingsError(f"upstream must be an http(s) URL or 'demo', got {upstream!r}")
