"""The upstream: URL mapping, header rules, and the only place upstream faults are translated.

One lean keep-alive pool (``pool.ConnectionPool``) serves every request.
Timeouts are explicit (connect, first byte, idle between reads) and there is
no total timeout, so long healthy streams are never cut while a stalled
upstream is ended by celgate. Every ``aiohttp`` / timeout exception that
crosses in here leaves as an ``UpstreamUnavailable`` or ``UpstreamTimeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from .errors import CelgateError, UpstreamTimeout, UpstreamTooLarge, UpstreamUnavailable
from .pool import ConnectFailed, ConnectionPool, Origin, PooledResponse, StreamedBody
from .settings import UpstreamTimeouts

__all__ = [
    "FAULTS",
    "Upstream",
    "UpstreamLimits",
    "UpstreamResponse",
    "forwardable_request_headers",
    "forwardable_response_headers",
    "translate",
]

# RFC 9110 §7.6.1 hop-by-hop fields, plus what aiohttp recomputes per hop.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_PRIVATE_PREFIX = "x-celgate-"  # celgate's own request headers never leave it
# Upstream bodies are decoded here, so the upstream may only use codings aiohttp can decode: the
# client's Accept-Encoding (br, zstd, ...) is replaced by aiohttp's own.
# Request bodies are decoded on the way in (or refused, ``client_request._body_was_decoded``), and the pool
# frames what it sends itself: the client's Content-Encoding never goes upstream.
# celgate answers a client's ``Expect: 100-continue`` itself and sends the upstream a body it already has.
_NOT_FORWARDED_REQUEST = _HOP_BY_HOP | {"accept-encoding", "content-encoding", "expect"}
_NOT_FORWARDED_RESPONSE = _HOP_BY_HOP | {"content-encoding"}  # bodies are decoded on the way in


def _connection_tokens(headers: Mapping[str, str]) -> set[str]:
    value = headers.get("Connection")
    return {token.strip().lower() for token in value.split(",")} if value else set()


def _without(headers: Mapping[str, str], excluded: frozenset[str] | set[str]) -> CIMultiDict[str]:
    """A copy of ``headers`` minus ``excluded`` names: a C-level copy, then removals of what is present.

    Cheaper than filtering every header in Python: the excluded names are rarely there.
    """
    copy = CIMultiDict(headers)
    for name in excluded:
        if name in copy:
            del copy[name]
    return copy


def forwardable_request_headers(headers: Mapping[str, str], drop: frozenset[str] = frozenset()) -> CIMultiDict[str]:
    """Client headers minus hop-by-hop ones, those named in ``Connection``, ``drop`` and ``x-celgate-*``."""
    copy = _without(headers, _NOT_FORWARDED_REQUEST | _connection_tokens(headers) | drop)
    private = [name for name in copy if name.lower().startswith(_PRIVATE_PREFIX)]
    for name in private:
        copy.popall(name, None)
    return copy


def forwardable_response_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    return _without(headers, _NOT_FORWARDED_RESPONSE | _connection_tokens(headers))


@dataclass(frozen=True, slots=True)
class UpstreamLimits:
    """How much of an upstream reply celgate holds at once: a whole body it reads, one SSE event it relays.

    A hostile or broken upstream must not grow celgate's memory without end;
    past a limit the reply is a fault and its connection is closed.
    """

    body_bytes: int
    event_bytes: int


class UpstreamResponse:
    """An upstream response: status and headers now, the body through celgate's fault translation."""

    __slots__ = ("_pooled", "headers", "limits", "status")

    def __init__(self, pooled: PooledResponse, limits: UpstreamLimits) -> None:
        self._pooled = pooled
        self.status = pooled.status
        self.headers = pooled.headers
        self.limits = limits

    @property
    def content_type(self) -> str:
        return self._pooled.content_type

    @property
    def content_length(self) -> int | None:
        return self._pooled.content_length

    async def read(self) -> bytes:
        """The whole body, at most ``limits.body_bytes`` of it: past that a fault, and the connection is closed."""
        limit = self.limits.body_bytes
        declared = self._pooled.content_length
        if declared is not None and declared > limit:
            raise self.too_large(f"a body of {declared} bytes", limit)
        content = self._pooled.content
        chunks: list[bytes] = []
        size = 0
        while True:
            with _translated:
                data = await content.readany()
            if not data:
                return b"".join(chunks)
            size += len(data)
            if size > limit:
                raise self.too_large("a body", limit)
            chunks.append(data)

    def too_large(self, what: str, limit: int) -> UpstreamTooLarge:
        """The fault for a reply past its limit; the connection is closed at once (its rest is never read)."""
        self._pooled.protocol.close()
        return UpstreamTooLarge(f"upstream sent {what} over celgate's limit of {limit} bytes")

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive."""
        content = self._pooled.content
        while True:
            with _translated:
                data = await content.readany()
            if not data:
                return
            yield data


class Upstream:
    """Sends requests to one upstream base URL over a shared keep-alive pool (``pool.ConnectionPool``)."""

    def __init__(self, base_url: str, timeouts: UpstreamTimeouts, limits: UpstreamLimits) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeouts = timeouts
        self._limits = limits
        self._pool = ConnectionPool(timeouts.connect, timeouts.first_byte, timeouts.idle)
        self._origins: dict[str, tuple[Origin, str]] = {}  # base URL -> (origin, base path)

    async def start(self) -> None:
        self._origin(self.base_url)  # a malformed upstream URL fails at start, not per request

    async def close(self) -> None:
        self._pool.close()

    def request(
        self,
        method: str,
        v1_path: str,
        headers: CIMultiDict[str],
        body: bytes | StreamedBody | None = None,
        query: str = "",
        base_url: str | None = None,
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        """Open one upstream response; its connection goes back to the pool (or is closed) on exit.

        ``v1_path`` and ``query`` are forwarded as the client sent them (still percent-encoded).
        """
        origin, base_path = self._origin(base_url.rstrip("/") if base_url else self.base_url)
        target = base_path + (v1_path[3:] if v1_path.startswith("/v1") else v1_path) + (f"?{query}" if query else "")
        return _OpenResponse(self._pool, self._limits, origin, method, target or "/", headers, body)

    async def probe(self) -> bool:
        """True if the upstream accepts TCP connections (for /readyz)."""
        origin, _ = self._origin(self.base_url)
        try:
            async with asyncio.timeout(self._timeouts.connect):
                _, writer = await asyncio.open_connection(origin.host, origin.port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    def _origin(self, base_url: str) -> tuple[Origin, str]:
        known = self._origins.get(base_url)
        if known is None:
            parts = urlsplit(base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UpstreamUnavailable(f"not an http(s) upstream URL: {base_url!r}", code="upstream_bad_url")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            known = self._origins[base_url] = (Origin(parts.scheme, parts.hostname, port), parts.path.rstrip("/"))
        return known


class _OpenResponse:
    """One request on the pool, as an async context manager (a class: cheaper than ``@asynccontextmanager``)."""

    __slots__ = ("_args", "_limits", "_origin", "_pool", "_pooled")

    def __init__(
        self,
        pool: ConnectionPool,
        limits: UpstreamLimits,
        origin: Origin,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        body: bytes | StreamedBody | None,
    ) -> None:
        self._pool = pool
        self._limits = limits
        self._origin = origin
        self._args = (method, target, headers, body)
        self._pooled: PooledResponse | None = None

    async def __aenter__(self) -> UpstreamResponse:
        method, target, headers, body = self._args
        with _translated:
            self._pooled = await self._pool.send(method, self._origin, target, headers, body)
        return UpstreamResponse(self._pooled, self._limits)

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._pooled is not None:
            self._pool.release(self._pooled, self._origin)


FAULTS = (aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError, OSError, TimeoutError)


class _Translated:
    """The one place upstream faults become celgate errors (a class: cheaper than a generator per use)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None and isinstance(exc, FAULTS):
            raise translate(exc) from exc


_translated = _Translated()


def translate(exc: BaseException) -> CelgateError:
    """The most specific celgate error for a fault the pool raised (aiohttp's protocol, OS, timeouts)."""
    if isinstance(exc.__cause__, CelgateError):
        return exc.__cause__  # our own upload body refused itself (413): not an upstream fault
    if isinstance(exc, (aiohttp.ServerTimeoutError, aiohttp.ConnectionTimeoutError, TimeoutError)):
        return UpstreamTimeout(f"upstream timed out: {_describe(exc)}")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamUnavailable(f"upstream response was cut or malformed: {_describe(exc)}", code="upstream_reset")
    if isinstance(exc, ConnectFailed):
        return UpstreamUnavailable(f"cannot connect to upstream: {_describe(exc)}", code="upstream_unreachable")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamUnavailable("upstream closed the connection", code="upstream_reset")
    if isinstance(exc, aiohttp.http_exceptions.HttpProcessingError):
        return UpstreamUnavailable(f"upstream sent an invalid response: {_describe(exc)}", code="upstream_bad_response")
    return UpstreamUnavailable(f"upstream connection failed: {_describe(exc)}", code="upstream_reset")


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
