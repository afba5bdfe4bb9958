"""The route table: every /v1 request path is read once, in canonical form, and classified.

The one source of truth for which decision points apply to a request: the
proxy dispatches on it, and ``celgate policy explain`` / ``test`` decide
with it, so what the CLI says is what the proxy does.

* **governed**: celgate parses the format and applies request and tool-call
  policy (chat completions, the Responses API, their stored objects, models);
* **tool-free**: nothing there can carry a tool call (embeddings, files,
  images, audio, ...): admission, then verbatim;
* **not governed**: anything that can carry tool calls celgate does not
  parse (realtime, assistants and threads, batches, conversations, evals)
  and any path celgate does not know. Refused, unless a policy ``routes:``
  entry opens it.

A path is canonical when it has no empty, ``.`` or ``..`` segment, no
backslash, ``;`` or control character, and its route words are spelled as
OpenAI spells them. Percent-escapes are allowed only inside the id
segments of tool-free routes (``/v1/models/org%2Fname``), where decoding
cannot turn the path into another route. Anything else non-canonical is a
400 (``NonCanonicalPath``): it is never forwarded under a governed route's
name without governance, and never forwarded for a lenient upstream to
reinterpret.

Which points decide a request (``RouteMatch.points``):

* governed: ``request``, then ``tool_call`` on the routes whose replies carry
  calls (every governed route but the model list);
* tool-free: ``request``;
* not governed: ``route`` (a ``routes:`` entry must open it), then ``request``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from urllib.parse import unquote

from .schema import Point

__all__ = ["ID_PATTERN", "Kind", "NonCanonicalPath", "RouteMatch", "classify"]


class NonCanonicalPath(ValueError):
    """A path that is not in canonical form; its message says what to send instead."""


class Kind(enum.Enum):
    GOVERNED = "governed"
    TOOL_FREE = "tool-free"
    NOT_GOVERNED = "not governed"


@dataclass(frozen=True, slots=True)
class RouteMatch:
    kind: Kind
    name: str  # the handler's key for governed routes, else the kind
    label: str  # the metrics label: the route pattern, never the raw path
    path: str  # the canonical (decoded) path policy sees
    ids: tuple[str, ...] = ()  # the {id} segments of a governed route

    @property
    def points(self) -> tuple[Point, ...]:
        """The decision points a request on this route passes, in order."""
        if self.kind is Kind.NOT_GOVERNED:
            return (Point.ROUTE, Point.REQUEST)
        if self.kind is Kind.GOVERNED and self.name in _CARRY_CALLS:
            return (Point.REQUEST, Point.TOOL_CALL)
        return (Point.REQUEST,)

    @property
    def requires_model(self) -> bool:
        """Whether the request body must name a ``model`` (celgate refuses one without)."""
        return self.name in _REQUIRE_MODEL


_GOVERNED: dict[tuple[str, str], str] = {
    ("POST", "/v1/chat/completions"): "chat.create",
    ("GET", "/v1/chat/completions"): "chat.list",
    ("GET", "/v1/chat/completions/{id}"): "chat.retrieve",
    ("POST", "/v1/chat/completions/{id}"): "chat.update",
    ("GET", "/v1/chat/completions/{id}/messages"): "chat.messages",
    ("POST", "/v1/responses"): "responses.create",
    ("GET", "/v1/responses/{id}"): "responses.retrieve",
    ("POST", "/v1/responses/{id}/cancel"): "responses.cancel",
    ("GET", "/v1/responses/{id}/input_items"): "responses.input_items",
    ("POST", "/v1/responses/compact"): "responses.compact",
    ("GET", "/v1/models"): "models.list",
}
_GOVERNED_PATTERNS = frozenset(pattern for _, pattern in _GOVERNED)
_CARRY_CALLS = frozenset(_GOVERNED.values()) - {"models.list"}
_REQUIRE_MODEL = frozenset({"chat.create", "responses.create"})
# Methods on governed paths that return nothing a client could run.
_TOOL_FREE_EXACT = {
    ("DELETE", "/v1/chat/completions/{id}"),
    ("DELETE", "/v1/responses/{id}"),
    ("POST", "/v1/responses/input_tokens"),
}
_TOOL_FREE_PREFIXES = frozenset(
    {
        "models",
        "embeddings",
        "moderations",
        "images",
        "audio",
        "files",
        "uploads",
        "vector_stores",
        "completions",
        "fine_tuning",
        "containers",
        "videos",
    }
)
_KNOWN_WORDS = _TOOL_FREE_PREFIXES | {
    "chat",
    "responses",
    "realtime",
    "assistants",
    "threads",
    "batches",
    "conversations",
    "evals",
    "chatkit",
    "organization",
    "messages",
    "cancel",
    "input_items",
    "compact",
    "input_tokens",
}
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,200}")
_UNSAFE = re.compile(r"[\\;\x00-\x1f\x7f]")


def classify(method: str, raw_path: str) -> RouteMatch:
    """The route of ``method raw_path`` (as the client encoded it); a non-canonical path is a 400."""
    known = _FIXED.get((method, raw_path))
    if known is not None:
        return known
    path = _decoded(raw_path)
    segments = path.split("/")[1:]
    if _UNSAFE.search(path) or any(s in ("", ".", "..") for s in segments) or len(segments) < 2 or segments[0] != "v1":
        raise _non_canonical(raw_path)
    if any(s.lower() in _KNOWN_WORDS and s not in _KNOWN_WORDS for s in segments[1:]):
        raise _non_canonical(raw_path)  # a route word in another case: a lenient upstream may not care
    pattern, ids = _pattern(segments)
    head = segments[1]
    if (method, pattern) in _TOOL_FREE_EXACT or (head in _TOOL_FREE_PREFIXES and (method, pattern) not in _GOVERNED):
        if raw_path.split("/")[2] != head or (path != raw_path and pattern in _GOVERNED_PATTERNS):
            raise _non_canonical(raw_path)  # the route word itself was escaped
        label = pattern if (method, pattern) in _TOOL_FREE_EXACT else f"/v1/{head}"  # bounded: never client text
        return RouteMatch(Kind.TOOL_FREE, Kind.TOOL_FREE.value, label, path, ids)
    if path != raw_path:
        raise _non_canonical(raw_path)
    name = _GOVERNED.get((method, pattern))
    if name is not None:
        return RouteMatch(Kind.GOVERNED, name, pattern, path, ids)
    label = pattern if pattern in _GOVERNED_PATTERNS else "/v1/*"
    return RouteMatch(Kind.NOT_GOVERNED, Kind.NOT_GOVERNED.value, label, path, ids)


# The governed routes without ids, classified once: most requests are one of these.
_FIXED = {(m, p): RouteMatch(Kind.GOVERNED, name, p, p) for (m, p), name in _GOVERNED.items() if "{" not in p}


def _decoded(raw_path: str) -> str:
    if "%" not in raw_path:
        return raw_path
    try:
        return unquote(raw_path, errors="strict")
    except UnicodeDecodeError as exc:
        raise _non_canonical(raw_path) from exc


def _pattern(segments: list[str]) -> tuple[str, tuple[str, ...]]:
    """``/v1/responses/{id}/cancel`` and the ids, from the path's segments."""
    words, ids = ["v1"], []
    for segment in segments[1:]:
        if segment not in _KNOWN_WORDS and ID_PATTERN.fullmatch(segment):
            words.append("{id}")
            ids.append(segment)
        else:
            words.append(segment)
    return "/" + "/".join(words), tuple(ids)


def _non_canonical(raw_path: str) -> NonCanonicalPath:
    return NonCanonicalPath(
        f"celgate: {raw_path[:200]!r} is not a canonical API path (repeated or trailing '/', '.' or '..' "
        "segments, escaped separators or route words, or a case variant); send the path as the API spells it"
    )
