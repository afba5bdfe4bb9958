"""Reading and checking what a client sent: body size, JSON, field types, policy input.

Only the fields celgate acts on are type-checked (model, messages, stream,
stream_options, tools, ...); everything else is the upstream's to judge and
passes through untouched.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from aiohttp import web

from celgate.policy import RequestInfo
from celgate.policy.context import strict_reader

from .errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from .forms import form_fields
from .keys import SETTINGS
from .offered import OfferedTool, offered_tools
from .pool import StreamedBody

__all__ = [
    "INTERNAL_HEADERS",
    "bounded_body",
    "chat_body",
    "json_body_or_none",
    "new_request_id",
    "passthrough_fields",
    "read_body",
    "request_id_from",
    "request_info",
    "responses_body",
]

# Headers celgate reads itself and never forwards or shows to policy.
INTERNAL_HEADERS = frozenset({"x-celgate-agent", "x-celgate-internal", "x-celgate-upstream"})
_SECRET_HEADERS = (
    frozenset({"authorization", "api-key", "x-api-key", "cookie", "proxy-authorization"}) | INTERNAL_HEADERS
)
_MAX_REQUEST_ID = 128
_INLINE_FORM_BYTES = 64 * 1024

# field -> (accepted types, readable name); bool is excluded from ints explicitly below
_CHAT_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((str,), "a string"),
    "messages": ((list,), "an array"),
    "stream": ((bool,), "a boolean"),
    "stream_options": ((dict,), "an object"),
    "tools": ((list,), "an array"),
    "tool_choice": ((str, dict), "a string or an object"),
    "parallel_tool_calls": ((bool,), "a boolean"),
    "n": ((int,), "an integer"),
    "max_tokens": ((int,), "an integer"),
    "max_completion_tokens": ((int,), "an integer"),
    "temperature": ((int, float), "a number"),
    "top_p": ((int, float), "a number"),
    "user": ((str,), "a string"),
    "metadata": ((dict,), "an object"),
    "functions": ((list,), "an array"),
    "function_call": ((str, dict), "a string or an object"),
}
_RESPONSES_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((str,), "a string"),
    "input": ((str, list), "a string or an array"),
    "stream": ((bool,), "a boolean"),
    "tools": ((list,), "an array"),
    "tool_choice": ((str, dict), "a string or an object"),
    "parallel_tool_calls": ((bool,), "a boolean"),
    "previous_response_id": ((str,), "a string"),
    "conversation": ((str, dict), "a string or an object"),
    "max_output_tokens": ((int,), "an integer"),
    "temperature": ((int, float), "a number"),
    "top_p": ((int, float), "a number"),
    "instructions": ((str, list), "a string or an array"),
    "store": ((bool,), "a boolean"),
    "user": ((str,), "a string"),
    "metadata": ((dict,), "an object"),
}
_SCALARS = (str, int, float, bool)
# Request codings aiohttp's server parser decodes before the handler reads the body (both parsers,
# http_parser.py and _http_parser.pyx, match exactly these lower-cased names of a single header).
_DECODED_CODINGS = frozenset({"gzip", "deflate", "br", "zstd"})


def _random_ids() -> Iterator[str]:
    """Random 96-bit ids as hex, 128 from one ``os.urandom`` call instead of a system call per request."""
    while True:
        block = os.urandom(12 * 128).hex()
        for start in range(0, len(block), 24):
            yield block[start : start + 24]


_RANDOM_IDS = _random_ids()


def new_request_id() -> str:
    return "req_" + next(_RANDOM_IDS)


def request_id_from(headers: Mapping[str, str]) -> str:
    """The client's ``x-request-id`` if it is sane, else a fresh one."""
    given = headers.get("x-request-id")
    if given and len(given) <= _MAX_REQUEST_ID and given.isprintable() and given.isascii():
        return given
    return new_request_id()


def _body_was_decoded(request: web.Request) -> bool:
    """True if aiohttp decoded the body on the way in; a coding it left encoded is refused (415).

    Why: the bytes celgate reads, shows to policy and forwards must be the bytes
    the upstream parses. A decoded body is forwarded without its
    ``Content-Encoding`` and framed by its decoded length, never by the
    client's ``Content-Length`` (which counted the compressed bytes: trusting
    it let the decoded tail reach the upstream as a second, unchecked request).
    """
    codings = request.headers.getall("Content-Encoding", ())
    if not codings:
        return False
    coding = codings[0].strip().lower() if len(codings) == 1 else None
    if coding == "identity":
        return False
    if coding in _DECODED_CODINGS:
        return True
    raise UnsupportedMediaType(
        f"unsupported request Content-Encoding {', '.join(codings)!r}: send one of gzip, deflate, br, zstd, or none",
        param="Content-Encoding",
        code="unsupported_content_encoding",
    )


async def read_body(request: web.Request) -> bytes:
    """The whole (decoded) body: 413 before reading past ``max_body_bytes``, 408 if it takes over ``client_timeout``.

    A body that arrived with its head (the common case) is read without arming a timer.
    """
    settings = request.app[SETTINGS]
    _body_was_decoded(request)
    _refuse_declared_excess(request, settings.max_body_bytes)
    try:
        if request.content.is_eof():
            return await request.read()
        async with asyncio.timeout(settings.client_timeout):
            return await request.read()  # stops at client_max_size (= max_body_bytes, set by create_app)
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"request body exceeds the limit of {settings.max_body_bytes} bytes") from exc
    except TimeoutError as exc:
        raise RequestTimeout(f"celgate: the request body took over {settings.client_timeout:g} s") from exc


def bounded_body(request: web.Request) -> StreamedBody:
    """Stream a non-JSON body (uploads) upstream as it arrives, capped and timed like ``read_body``.

    A declared length over the limit is refused here, before any upstream
    connection. The client's ``Content-Length`` frames the upload only when
    aiohttp read exactly that many bytes (no coding decoded); otherwise the
    upload goes chunked. The pool checks the count either way.
    """
    settings = request.app[SETTINGS]
    decoded = _body_was_decoded(request)
    _refuse_declared_excess(request, settings.max_body_bytes)
    chunks = _bounded_chunks(request, settings.max_body_bytes, settings.client_timeout)
    return StreamedBody(chunks, None if decoded else request.content_length)


def _refuse_declared_excess(request: web.Request, limit: int) -> None:
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")


async def _bounded_chunks(request: web.Request, limit: int, timeout: float) -> AsyncIterator[bytes]:
    seen = 0
    content = request.content
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await content.readany()
        except TimeoutError as exc:
            raise RequestTimeout(f"celgate: the request body stalled for {timeout:g} s") from exc
        if not chunk:
            return
        seen += len(chunk)
        if seen > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        yield chunk


def chat_body(raw: bytes) -> dict[str, Any]:
    """Parse and type-check a chat completions request body."""
    return _checked(_json_object(raw), ("model", "messages"), _CHAT_TYPES)


def responses_body(raw: bytes) -> dict[str, Any]:
    """Parse and type-check a Responses API request body."""
    return _checked(_json_object(raw), ("model",), _RESPONSES_TYPES)


def _checked(
    body: dict[str, Any], required: tuple[str, ...], types: dict[str, tuple[tuple[type, ...], str]]
) -> dict[str, Any]:
    for field in required:
        if body.get(field) is None:
            raise BadRequest(f"you must provide '{field}'", param=field, code="missing_required_parameter")
    for field in types.keys() & body.keys():
        value = body[field]
        accepted, name = types[field]
        if value is not None and not _has_type(value, accepted):
            raise BadRequest(f"'{field}' must be {name}, got {type(value).__name__}", param=field, code="invalid_type")
    return body


def _has_type(value: Any, types: tuple[type, ...]) -> bool:
    """``isinstance``, except that a JSON ``true`` is no integer (``bool`` subclasses ``int``)."""
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def json_body_or_none(raw: bytes) -> dict[str, Any] | None:
    """A passthrough body as JSON when it is a JSON object, for policy input, whatever its Content-Type says.

    A body that does not start like a JSON object gives None (policy sees no
    model). One that does (after whitespace or a byte order mark) must be
    exactly one JSON object, else it is refused like on a governed route: a
    lenient upstream reads the model of a body with a BOM, ``NaN`` or data after
    the object, which policy would have seen as "no model".
    """
    if raw.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")) or raw.find(b"\x00", 0, 4) >= 0:
        raise BadRequest("request body is JSON in UTF-16 or UTF-32: send UTF-8", code="invalid_json")
    if raw.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()[:1] != b"{":
        return None
    return _json_object(raw)


async def passthrough_fields(request: web.Request, raw: bytes) -> dict[str, Any] | None:
    """What policy reads of a tool-free body: a form's ``model`` field, else the body as JSON (or None).

    A large form is parsed in a thread (the parser is pure Python: ~30 ms per MiB) so streams on this
    worker keep flowing. aiohttp refuses a second ``Content-Type``, so the boundary is the upstream's too.
    """
    content_type = request.headers.get("Content-Type", "")
    if len(raw) > _INLINE_FORM_BYTES:
        fields = await asyncio.to_thread(form_fields, request.content_type, content_type, raw)
    else:
        fields = form_fields(request.content_type, content_type, raw)
    return json_body_or_none(raw) if fields is None else fields


def _repeated_key(key: str) -> BadRequest:
    return BadRequest(
        f"request body repeats the key {key!r}: celgate and the upstream could read different values",
        code="duplicate_key",
    )


def _not_a_number(name: str) -> ValueError:
    """``NaN`` and ``Infinity`` are not JSON: upstreams refuse or read them their own way, and rules compare wrongly."""
    return ValueError(f"{name} is not a JSON number")


_BODY = strict_reader(_repeated_key, _not_a_number)


def _json_object(raw: bytes) -> dict[str, Any]:
    """The body as one JSON object read the one way policy and upstream both will, or a 400."""
    try:
        text = raw.decode("utf-8-sig" if raw.startswith(b"\xef\xbb\xbf") else "utf-8")
        body = _BODY(text)
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not UTF-8: {exc.reason}", code="invalid_json") from exc
    except RecursionError as exc:
        raise BadRequest("request body is nested too deeply", code="invalid_json") from exc
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    return body


def _visible_headers(request: web.Request) -> dict[str, str]:
    """``request.headers`` in CEL; a header sent twice with two values is a 400 (policy and upstream may differ)."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        lowered = name.lower()
        if lowered not in _SECRET_HEADERS and headers.setdefault(lowered, value) != value:
            raise BadRequest(
                f"header {lowered!r} is sent twice with different values: send it once",
                param=lowered,
                code="ambiguous_header",
            )
    return headers


def request_info(
    request: web.Request,
    body: Mapping[str, Any] | None,
    agent: str | None,
    *,
    for_policy: bool = True,
    headers_read: Callable[[str], bool] | None = None,
) -> RequestInfo:
    """The policy's view of a request (``request.*`` in CEL); text policy cannot read is a 400.

    Without a policy to read it (``for_policy=False``: ``--no-policy``) the headers map is left
    empty and the text is not checked: nothing reads either. ``headers_read(model)`` says whether
    a rule that may decide this request reads ``request.headers``; when it says no, the map and
    its checks are skipped too. Malformed tools are still a 400.
    """
    body = body or {}
    model = body.get("model")
    user = body.get("user")
    metadata = body.get("metadata")
    offered = offered_tools(body) if "tools" in body or "functions" in body else []
    model = model if isinstance(model, str) else ""
    visible = for_policy and (headers_read is None or headers_read(model))
    headers = _visible_headers(request) if visible else {}
    scalars = _scalars(body)
    user = user if isinstance(user, str) else None
    metadata = metadata if isinstance(metadata, dict) else None
    if for_policy:
        _readable(_texts(model, user, agent, headers, scalars, metadata, offered))
    return RequestInfo(
        model=model,
        agent=agent,
        stream=body.get("stream") is True,
        path=request.path,
        headers=headers,
        tools=tuple(tool.name for tool in offered),
        scalars=scalars,
        user=user,
        metadata=metadata,
        tool_definitions=tuple(tool.definition for tool in offered),
        method=request.method,
    )


def _texts(
    model: str,
    user: str | None,
    agent: str | None,
    headers: dict[str, str],
    scalars: dict[str, Any],
    metadata: dict[str, Any] | None,
    offered: list[OfferedTool],
) -> list[str]:
    """Every text of the request a rule can read."""
    texts = [model, *headers, *headers.values()]
    texts += [value for value in scalars.values() if isinstance(value, str)]
    if user:
        texts.append(user)
    if agent:
        texts.append(agent)
    if metadata:
        texts += _strings(metadata)
    for tool in offered:
        texts += [value for value in tool.definition.values() if isinstance(value, str)]  # holds the name
    return texts


def _scalars(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if isinstance(v, _SCALARS) and k not in ("model", "stream", "user")}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _readable(texts: list[str]) -> None:
    """Refuse text CEL cannot hold (lone surrogates from JSON escapes, undecodable header bytes)."""
    joined = "".join(texts)
    if joined.isascii():
        return
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(
            "request holds text that is not valid Unicode (a lone surrogate or a raw non-UTF-8 byte)",
            code="invalid_text",
        ) from exc
