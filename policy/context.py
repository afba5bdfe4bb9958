"""The CEL variables a rule's ``when`` sees: ``principal``, ``request``, ``tool``, ``now``.

This module is the one definition of their shape: the builders below produce
them, and ``FIELDS`` documents each field (type, when it exists, whether it
changes per call). ``docs/policies.md`` carries ``markdown_table()``
verbatim; a test keeps the two in sync.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .schema import Principal, RequestInfo, ToolCall

__all__ = [
    "FIELDS",
    "LONE_SURROGATE",
    "NOW_SECOND",
    "PER_CALL_FIELDS",
    "ROOTS",
    "UNREADABLE",
    "Field",
    "markdown_table",
    "principal_value",
    "principal_variables",
    "read_arguments",
    "request_reader",
    "request_variables",
    "strict_reader",
    "tool_variables",
    "whole_document",
]

ROOTS = frozenset({"principal", "request", "tool", "now"})
# The cache path of a rule that reads ``now`` only through accessors constant within a second:
# its outcome is keyed by the second (``now`` has no fields, so no real path can collide).
NOW_SECOND = ("now", "second")


@dataclass(frozen=True, slots=True)
class Field:
    """One documented CEL field; ``per_call`` fields make a rule's result uncacheable."""

    path: str
    type: str
    present: str
    description: str
    per_call: bool = False


FIELDS: tuple[Field, ...] = (
    Field(
        "principal.id", "string", "always", "Principal id from `principals:`; `anonymous` for a missing or unknown key."
    ),
    Field("principal.<attr>", "any", "when set", "Every other field of the principal entry (`team`, `roles`, ...)."),
    Field("request.model", "string", "always", "The `model` of the request body."),
    Field("request.agent", "string", "always", 'Drop-in agent name or `x-celgate-agent` header; `""` when none.'),
    Field("request.stream", "bool", "always", "Whether the client asked for a stream."),
    Field("request.path", "string", "always", "Request path, e.g. `/v1/chat/completions`."),
    Field("request.method", "string", "always", "HTTP method, e.g. `POST`; routes may restrict it with `methods:`."),
    Field(
        "request.headers",
        "map(string, string)",
        "always",
        "Request headers, lower-case names, auth headers removed. A header sent twice with different values is "
        "refused (400 `ambiguous_header`): the upstream might read the other one. Built (and checked) only when a "
        "rule that may decide the request or one of its tool calls reads it (by principals, models and agents); "
        "otherwise empty.",
        True,
    ),
    Field(
        "request.tools",
        "list(string)",
        "always",
        "The tools the request offers to the model: function and custom tools by name, hosted tools by type "
        "(`web_search`, `file_search`, `code_interpreter`, `mcp`, `image_generation`, `computer_use_preview`, "
        "`local_shell`, `shell`, `apply_patch`, ...).",
    ),
    Field(
        "request.tool_definitions",
        "list(map(string, dyn))",
        "always",
        'One map per offered tool: `type`, `name` (`""` for a hosted tool without one) and the tool\'s scalar '
        "fields, e.g. an `mcp` tool's `server_label`, `server_url`, and `require_approval` when it is a string.",
    ),
    Field("request.user", "string", "when sent", "The body's `user` field."),
    Field("request.metadata", "map(string, dyn)", "when sent", "The body's `metadata` object.", True),
    Field(
        "request.<scalar>",
        "int, double, string, bool, null",
        "when sent",
        "Every other top-level scalar of the body (`max_tokens`, `temperature`, ...); test with `has()`.",
    ),
    Field("tool.name", "string", "tool_call", "The name of the tool the model called."),
    Field(
        "tool.type",
        "string",
        "tool_call",
        "`function`; `custom` (a custom tool: free-text input); or a client-executed built-in: "
        "`local_shell`, `shell`, `apply_patch`, `computer`.",
    ),
    Field(
        "tool.arguments",
        "map(string, dyn)",
        "tool_call",
        'Arguments parsed from JSON; `{}` for `""` and for a custom tool\'s free text. Text that is not one '
        "unambiguous JSON object (duplicate keys, `NaN`, trailing data, a BOM, ...) makes a rule reading it fail.",
        True,
    ),
    Field(
        "tool.raw_arguments",
        "string",
        "tool_call",
        "The arguments exactly as the model produced them; a custom tool's free-text input.",
        True,
    ),
    Field("tool.id", "string", "tool_call", "The tool call id.", True),
    Field(
        "tool.source",
        "string",
        "tool_call",
        "Who executes the call: `upstream` (the client app, for a model behind the proxy), `agent` (a drop-in "
        "agent's own tool), `gateway` (a gateway tool from `--tools`) or `mcp` (a tool of a gateway MCP server).",
    ),
    Field(
        "tool.server",
        "string",
        "tool_call",
        'The gateway MCP server whose tool this is (its `name:` in `tools/`); `""` unless `tool.source == "mcp"`.',
    ),
    Field("now", "timestamp", "always", 'Evaluation time (UTC); `now.getHours("UTC")` etc.', True),
)

PER_CALL_FIELDS: frozenset[tuple[str, str]] = frozenset(
    (root, field) for root, _, field in (f.path.partition(".") for f in FIELDS if f.per_call) if field
)


def markdown_table() -> str:
    """The CEL context reference table, as ``docs/policies.md`` shows it."""
    lines = ["| field | type | present | meaning | per call |", "|---|---|---|---|---|"]
    lines += [
        f"| `{f.path}` | {f.type} | {f.present} | {f.description} | {'yes' if f.per_call else ''} |" for f in FIELDS
    ]
    return "\n".join(lines)


def principal_variables(principal: Principal) -> dict[str, Any]:
    return {**principal.attributes, "id": principal.id}


_OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def _largest_output_limit(scalars: Mapping[str, Any]) -> dict[str, Any]:
    """``max_tokens``: the largest output limit under any name an upstream reads, so no other name dodges a cap."""
    limits: list[float] = [v for v in map(scalars.get, _OUTPUT_LIMITS) if type(v) is int or type(v) is float]
    return {"max_tokens": max(limits)} if limits else {}


# ``request.*`` fields that are always set, and those set only when not None; the body's scalars fill the rest.
_ALWAYS: dict[str, Callable[[RequestInfo], Any]] = {
    "model": lambda request: request.model,
    "agent": lambda request: request.agent or "",
    "stream": lambda request: request.stream,
    "path": lambda request: request.path,
    "headers": lambda request: request.headers if type(request.headers) is dict else dict(request.headers),
    "tools": lambda request: list(request.tools),
    "tool_definitions": lambda request: [dict(definition) for definition in request.tool_definitions],
    "method": lambda request: request.method,
}
_WHEN_SENT: dict[str, Callable[[RequestInfo], Any]] = {
    "user": lambda request: request.user,
    "metadata": lambda request: dict(request.metadata) if request.metadata is not None else None,
}


def request_variables(request: RequestInfo) -> dict[str, Any]:
    """Body scalars first, so the documented fields win over a body field of the same name."""
    variables: dict[str, Any] = {
        **request.scalars,
        **_largest_output_limit(request.scalars),
        **{name: get(request) for name, get in _ALWAYS.items()},
    }
    for name, get in _WHEN_SENT.items():
        value = get(request)
        if value is not None:
            variables[name] = value
    return variables


def request_reader(name: str, default: Any) -> Callable[[RequestInfo], Any]:
    """``request_variables(request).get(name, default)`` without building the map, as a function chosen once.

    Cached rules' keys read single fields: a plan keeps one reader per field its rules read.
    """
    always = _ALWAYS.get(name)
    if always is not None:
        return always
    when_sent = _WHEN_SENT.get(name)
    if when_sent is not None:
        return lambda request: _or(when_sent(request), request.scalars.get(name, default))
    if name == "max_tokens":
        return lambda request: _or(_largest_output_limit(request.scalars).get(name), request.scalars.get(name, default))
    return lambda request: request.scalars.get(name, default)


def _or(value: Any, otherwise: Any) -> Any:
    return otherwise if value is None else value


def principal_value(principal: Principal, name: str, default: Any) -> Any:
    """``principal_variables(principal).get(name, default)`` without building the map."""
    return principal.id if name == "id" else principal.attributes.get(name, default)


_INT64 = range(-(2**63), 2**63)
UNREADABLE = "the tool arguments are not one unambiguous JSON object"
LONE_SURROGATE = "a lone surrogate"  # not text at all: even a rule reading only ``tool.raw_arguments`` fails
_FREE_TEXT = frozenset({"custom", "program"})  # tool types whose input is text, not JSON arguments
_LOOKS_LIKE_AN_OBJECT = re.compile(r"[\s\ufeff\u200b\u2060]*\{")


def _json_int(text: str) -> int | float:
    """JSON integers beyond CEL's int64 become doubles, so one odd argument can't poison ``tool``."""
    value = int(text)
    return value if value in _INT64 else float(value)


def _finite_float(text: str) -> float:
    """``1e400`` overflows to infinity in Python and JavaScript, and is an error in Go: no one reading."""
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError(f"{text[:40]} is out of range")
    return value


def strict_reader(
    repeated_key: Callable[[str], Exception],
    constant: Callable[[str], Exception],
    *,
    parse_int: Callable[[str], Any] | None = None,
    parse_float: Callable[[str], Any] | None = None,
) -> Callable[[str], Any]:
    """A reader of one JSON document, read the one way every client reads it, or an error.

    Every strict reader is built here (tool arguments in this module, request bodies and upstream
    replies in the proxy), so none can miss a check: a key an object repeats raises
    ``repeated_key(key)`` (parsers disagree on which value wins), ``NaN`` or ``Infinity`` raise
    ``constant(name)`` (not JSON), and data after the document is an error. ``parse_int`` and
    ``parse_float`` are the decoder's.
    """

    def no_constant(name: str) -> Any:
        raise constant(name)

    decoder = json.JSONDecoder(
        object_pairs_hook=_unique_keys(repeated_key),
        parse_constant=no_constant,
        parse_int=parse_int,
        parse_float=parse_float,
    )
    return whole_document(decoder)


def _unique_keys(refuse: Callable[[str], Exception]) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """A ``json`` ``object_pairs_hook`` that raises ``refuse(key)`` for the first key an object repeats."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        value = dict(pairs)
        if len(value) != len(pairs):
            seen: set[str] = set()
            raise refuse(next(k for k, _ in pairs if k in seen or seen.add(k)))  # type: ignore[func-returns-value]
        return value

    return hook


def whole_document(decoder: json.JSONDecoder) -> Callable[[str], Any]:
    """``decoder.decode`` on the hot paths: its C scanner, with the whitespace checks ``decode`` makes around it.

    ``JSONDecoder.decode`` spends two Python frames and two regex matches per document, about a
    microsecond: as much as scanning a small stream chunk. The values and errors are ``decode``'s.
    """
    scan: Callable[[str, int], tuple[Any, int]] = decoder.scan_once  # type: ignore[attr-defined]  # set in __init__

    def decode(text: str) -> Any:
        try:
            value, end = scan(text, len(text) - len(text.lstrip(_JSON_SPACE)))
        except StopIteration as exc:
            raise json.JSONDecodeError("Expecting value", text, exc.value) from None
        if end != len(text):
            after = text[end:].lstrip(_JSON_SPACE)
            if after:
                raise json.JSONDecodeError("Extra data", text, len(text) - len(after))
        return value

    return decode


_JSON_SPACE = " \t\n\r"  # what JSON (and ``json.decoder.WHITESPACE``) allows around a value
_ARGUMENTS = strict_reader(
    lambda key: ValueError(f"duplicate key {key[:40]!r}"),
    lambda name: ValueError(f"{name} is not JSON"),
    parse_int=_json_int,
    parse_float=_finite_float,
)


def _is_text(value: Any) -> bool:
    """Whether every string in a parsed value is valid Unicode (a ``\\ud800`` escape decodes to a lone surrogate)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not item.isascii() and any("\ud800" <= c <= "\udfff" for c in item):
                return False
        elif isinstance(item, dict):
            pending += item.keys()
            pending += item.values()
        elif isinstance(item, list):
            pending += item
    return True


def read_arguments(raw: str, kind: str = "function") -> tuple[dict[str, Any], str | None]:
    """``tool.arguments`` and, when ``raw`` is not one unambiguous JSON object, why (rules reading it then fail).

    Apps parse arguments with many JSON parsers: duplicate keys (first or last
    wins), ``NaN``, a byte order mark, trailing data or a lone surrogate read
    differently, or not at all, so none of them may decide as ``{}``. ``""``
    means no arguments. A free-text input (custom tools) is ``{}`` unless it
    looks like an object; then it must be one.
    """
    if not raw.isascii():
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            return {}, LONE_SURROGATE
    if raw == "" or (kind in _FREE_TEXT and not _LOOKS_LIKE_AN_OBJECT.match(raw)):
        return {}, None
    try:
        value = _ARGUMENTS(raw)
        if "\\u" in raw and not _is_text(value):
            return {}, LONE_SURROGATE
    except RecursionError:
        return {}, "nested too deeply"
    except ValueError as exc:
        return {}, str(exc).partition(":")[0]
    if not isinstance(value, dict):
        return {}, f"a JSON {type(value).__name__ if value is not None else 'null'}, not an object"
    return value, None


def tool_variables(tool: ToolCall, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """``tool`` in CEL; ``arguments`` as ``read_arguments`` gave them, when the caller has read them already."""
    return {
        "name": tool.name,
        "arguments": read_arguments(tool.raw_arguments, tool.type)[0] if arguments is None else arguments,
        "raw_arguments": tool.raw_arguments,
        "id": tool.id,
        "source": tool.source,
        "type": tool.type,
        "server": tool.server,
    }
