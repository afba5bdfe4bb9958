"""The values the policy engine works with: inputs (principal, request, tool call) and compiled rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends import Program
    from .globs import GlobList

__all__ = [
    "ANONYMOUS",
    "Action",
    "Defaults",
    "Effect",
    "Mode",
    "Point",
    "Principal",
    "RequestInfo",
    "Rule",
    "ToolCall",
]


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class Point(StrEnum):
    """Where a decision is made: admitting a request, or a tool call a model emitted."""

    REQUEST = "request"
    TOOL_CALL = "tool_call"


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


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the proxy knows about one request; headers are lower-case and carry no credentials."""

    model: str
    agent: str | None
    stream: bool
    path: str
    headers: Mapping[str, str]
    tools: tuple[str, ...]
    scalars: Mapping[str, Any]
    user: str | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call a model (``upstream``) or a drop-in agent (``agent``) emitted."""

    name: str
    raw_arguments: str
    id: str
    source: str


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
    data (arguments, headers, metadata, ``now``, or anything the scanner can't
    follow). ``roots`` are the CEL variables the ``when`` may read.
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
    file: str
    line: int | None
