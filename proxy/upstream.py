"""The upstream connection pool and the only place upstream faults are translated.

One ``aiohttp.ClientSession`` with a keep-alive pool serves every request.
Timeouts are explicit (connect, first byte, idle between reads) and there is
no total timeout, so long healthy streams are never cut while a stalled
upstream is ended by celgate. Every ``aiohttp`` / timeout exception that
crosses in here leaves as an ``UpstreamUnavailable`` or ``UpstreamTimeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .errors import CelgateError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from .settings import UpstreamTimeouts

__all__ = ["Upstream", "forwardable_request_headers", "forwardable_response_headers"]

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
_NOT_FORWARDED_REQUEST = _HOP_BY_HOP | {"accept-encoding"}
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


class Upstream:
    """Sends requests to one upstream base URL over a shared keep-alive pool."""

    def __init__(self, base_url: str, timeouts: UpstreamTimeouts) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeouts = timeouts
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, enable_cleanup_closed=True)
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self._timeouts.connect, sock_read=self._timeouts.first_byte
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=True, skip_auto_headers=("User-Agent",)
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url_for(self, v1_path: str, base_url: str | None = None) -> str:
        """Map a client path under ``/v1`` to the upstream URL (its own base path kept)."""
        base = base_url.rstrip("/") if base_url else self.base_url
        return base + v1_path[3:] if v1_path.startswith("/v1") else base + v1_path

    @asynccontextmanager
    async def request(
        self,
        method: str,
        v1_path: str,
        headers: CIMultiDict[str],
        body: Any = None,
        query: str = "",
        base_url: str | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open one upstream response; it is released (or closed, if unread) on exit."""
        assert self._session is not None, "Upstream.start() was not awaited"
        url = URL(self.url_for(v1_path, base_url) + (f"?{query}" if query else ""), encoded=True)  # already encoded
        try:
            response = await self._session.request(method, url, headers=headers, data=body, allow_redirects=False)
        except _FAULTS as exc:
            raise _translate(exc) from exc
        try:
            self._switch_to_idle_timeout(response)
            yield response
        finally:
            response.close() if not response.content.at_eof() else response.release()

    async def read_body(self, response: aiohttp.ClientResponse) -> bytes:
        try:
            return await response.read()
        except _FAULTS as exc:
            raise _translate(exc) from exc

    async def iter_chunks(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; faults become ``UpstreamError``s."""
        content = response.content
        while True:
            try:
                data = await content.readany()
            except _FAULTS as exc:
                raise _translate(exc) from exc
            if not data:
                return
            yield data

    async def probe(self) -> bool:
        """True if the upstream accepts TCP connections (for /readyz)."""
        parts = urlsplit(self.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            async with asyncio.timeout(self._timeouts.connect):
                _, writer = await asyncio.open_connection(parts.hostname, port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    def _switch_to_idle_timeout(self, response: aiohttp.ClientResponse) -> None:
        """Headers arrived: from now on the read timeout is the idle timeout.

        Only while body bytes are still to come: aiohttp drops the read timer
        at end of body, and a timer armed after that would outlive the
        response (a 120 s timer per request piles up, and costs ~3x the CPU).
        """
        connection = response.connection
        if connection is not None and connection.protocol is not None and not response.content.is_eof():
            connection.protocol.read_timeout = self._timeouts.idle
            connection.protocol.start_timeout()


_FAULTS = (aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError, OSError, TimeoutError)


def _translate(exc: BaseException) -> CelgateError:
    """The most specific celgate error for an upstream fault."""
    if isinstance(exc.__cause__, CelgateError):
        return exc.__cause__  # our own upload body refused itself (413): not an upstream fault
    if isinstance(exc, (aiohttp.ServerTimeoutError, aiohttp.ConnectionTimeoutError, TimeoutError)):
        return UpstreamTimeout(f"upstream timed out: {_describe(exc)}")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamUnavailable(f"upstream response was cut or malformed: {_describe(exc)}", code="upstream_reset")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnavailable(f"cannot connect to upstream: {_describe(exc)}", code="upstream_unreachable")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamUnavailable("upstream closed the connection", code="upstream_reset")
    if isinstance(exc, (aiohttp.ClientResponseError, aiohttp.http_exceptions.HttpProcessingError)):
        return UpstreamUnavailable(f"upstream sent an invalid response: {_describe(exc)}", code="upstream_bad_response")
    return UpstreamUnavailable(f"upstream connection failed: {_describe(exc)}", code="upstream_reset")


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
