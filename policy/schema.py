"""The policy's data model: its inputs (principal, request, tool call) and what the loader compiles (rules, routes).

Called ``schema`` because "model" means the LLM everywhere else in celgate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from .backends import Program
from .globs import GlobList

__all__ = [
    "ANONYMOUS",
    "RULE_POINTS",
    "Action",
    "Defaults",
    "Effect",
    "Mode",
    "Point",
    "Principal",
    "RequestInfo",
    "Route",
    "Rule",
    "ToolCall",
]


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class Point(StrEnum):
    """Where a decision is made: admitting a request, a tool call a model emitted, or opening an ungoverned path.

    Rules apply to ``request`` and ``tool_call``; ``route`` decisions come from
    the ``routes:`` entries alone.
    """

    REQUEST = "request"
    TOOL_CALL = "tool_call"
    ROUTE = "route"


RULE_POINTS = (Point.REQUEST, Point.TOOL_CALL)  # what a rule's `on:` may name


class Mode(StrEnum):
    """``dry-run`` records a deny as ``would_deny`` and lets the traffic through."""

    ENFORCE = "enforce"
    DRY_RUN = "dry-run"


class Action(StrEnum):
    """What happens to a denied tool call: removed from the response, or the whole response fails."""

    STRIP = "strip"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: ``attributes`` are every principal field except id/key_sha256/key_env."""

    id: str
    attributes: Mapping[str, Any]


ANONYMOUS = Principal("anonymous", {})


class RequestInfo(NamedTuple):
    """What the proxy knows about one request; headers are lower-case and carry no credentials.

    ``tools`` names every offered tool: functions and custom tools by name,
    hosted tools by type. ``tool_definitions`` has one map per offered tool
    (``type``, ``name``, and its scalar fields), for rules that need more than
    a name. ``path`` is the canonical path; ``method`` matters to routes.
    """

    model: str
    agent: str | None
    stream: bool
    path: str
    headers: Mapping[str, str]
    tools: tuple[str, ...]
    scalars: Mapping[str, Any]
    user: str | None = None
    metadata: Mapping[str, Any] | None = None
    tool_definitions: tuple[Mapping[str, Any], ...] = ()
    method: str = "POST"


class ToolCall(NamedTuple):
    """One tool call a model (``upstream``) emitted, or an agent is about to execute.

    ``source`` says who executes it: ``upstream`` (the client app), ``agent``
    (a drop-in's own tool), ``gateway`` (a gateway tool from ``--tools``) or
    ``mcp`` (a tool of a gateway MCP server, named in ``server``).
    ``type`` is ``function``, ``custom`` (``raw_arguments`` is the free-text
    input), or a client-executed built-in: ``local_shell``, ``shell``,
    ``apply_patch``, ``computer``.
    """

    name: str
    raw_arguments: str
    id: str
    source: str
    type: str = "function"
    server: str = ""


@dataclass(frozen=True, slots=True)
class Defaults:
    """The set-wide ``defaults:`` block."""

    decision: Effect = Effect.DENY
    mode: Mode = Mode.ENFORCE
    deny_message: str = "celgate: {subject} denied by policy ({rule}): {reason}"


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """One compiled rule; everything the evaluator needs is precomputed at load.

    ``mode`` is the effective mode (the rule's own, else ``defaults.mode``).
    ``cache_paths`` lists the ``(root, field)`` values the result depends on when
    it may be cached across decisions, and is None when the rule reads per-call
    data (arguments, headers, metadata, ``now``, or a root as a whole).
    ``roots`` are the CEL variables the ``when`` may read. ``reads_arguments``:
    it may read ``tool.arguments`` or ``tool.raw_arguments``; ``parses_arguments``:
    ``tool.arguments`` (it fails on arguments that are not one unambiguous JSON object).
    ``reads_headers``: it may read ``request.headers``.
    """

    index: int
    name: str
    point: Point
    effect: Effect
    mode: Mode
    action: Action
    reason: str
    principals: GlobList | None
    models: GlobList | None
    agents: GlobList | None
    tools: GlobList | None
    when: str | None
    program: Program | None
    cache_paths: tuple[tuple[str, str], ...] | None
    roots: frozenset[str]
    reads_arguments: bool
    parses_arguments: bool
    file: str
    line: int | None
    reads_headers: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """One compiled ``routes:`` entry: it opens the ungoverned paths its lists and ``when`` match.

    ``methods`` and ``principals`` are None when the entry does not restrict
    them; ``roots`` are the CEL variables the ``when`` may read.
    """

    index: int
    id: str
    paths: GlobList
    methods: tuple[str, ...] | None
    principals: GlobList | None
    when: str | None
    program: Program | None
    roots: frozenset[str]
    description: str
    file: str
    line: int

    @property
    def reason(self) -> str:
        """What a decision opened by this entry says: its description, else its id."""
        return self.description or f"opened by route {self.id}"
