"""A lean keep-alive HTTP/1.1 connection pool to upstreams.

Why not ``aiohttp.ClientSession``: its per-request machinery (``ClientRequest``,
``ClientResponse``, timer contexts, tracing, cookie and redirect handling)
was about 40 % of the proxy's CPU per request, and a sidecar needs none of it.
This pool keeps the parts that matter and are hard to get right, from
aiohttp itself: ``ResponseHandler`` (the client protocol, with its C HTTP
parser, chunked and gzip/deflate decoding, read timeouts and connection-loss
reporting) and ``StreamReader`` bodies. What it adds is small: writing the
request head and body, a pool of idle connections per (scheme, host, port),
and one retry on a fresh connection when a reused one turns out to have been
closed by the upstream before it answered.

Errors are aiohttp's own exception types; ``upstream.py`` translates them.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.helpers import TimerNoop
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["ConnectFailed", "ConnectionPool", "Origin", "PooledResponse", "StreamedBody", "UpstreamProtocol"]

_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})
_ACCEPT_ENCODING = "gzip, deflate"  # what ResponseHandler's parser decodes
_TIMER = TimerNoop()
_WRITE_HIGH_WATER = 64 * 1024
_EARLY = 0.001  # a timer may fire this much before its time (the loop's clock resolution)
# The pool alone frames what it sends: these request headers are always its own, never the caller's.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})


class ConnectFailed(aiohttp.ClientConnectionError):
    """No connection could be opened to the upstream (refused, unreachable, DNS)."""


@dataclass(frozen=True, slots=True)
class StreamedBody:
    """An upload sent as it arrives: ``length`` is the exact byte count it yields, or None (sent chunked).

    The pool checks the count as it writes: a stream that yields more or fewer
    bytes than it declared is a fault and its connection is closed, so the
    upstream never reads a byte of one request as part of another.
    """

    chunks: AsyncIterable[bytes]
    length: int | None


class UpstreamProtocol(ResponseHandler):
    """aiohttp's client protocol, told when a response is expected.

    Bytes that arrive while no request is in flight (an upstream answering
    twice, or a response for a request celgate never meant to send) poison
    the connection: it is closed at once and never handed out again.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.in_flight = False
        self.unsolicited = False
        self._read_deadline = 0.0

    def _reschedule_timeout(self) -> None:
        """Every read moves the read deadline; one timer follows it lazily.

        aiohttp cancels and schedules a timer per read (27 per bench stream).
        Here a read only moves the deadline: the timer, if it fires before
        it, sleeps again until the current one, and it is re-armed at once
        only when the deadline moves earlier (first-byte to idle timeout).
        Every path that stops the timer (``_drop_timeout``) still cancels it.
        """
        timeout = self._read_timeout
        if not timeout:
            self._drop_timeout()
            return
        self._read_deadline = deadline = self._loop.time() + timeout
        handle = self._read_timeout_handle
        if handle is None or handle.when() > deadline:
            if handle is not None:
                handle.cancel()
            self._read_timeout_handle = self._loop.call_at(deadline, self._read_timer_fired)

    def _read_timer_fired(self) -> None:
        self._read_timeout_handle = None
        if self._loop.time() < self._read_deadline - _EARLY:
            self._read_timeout_handle = self._loop.call_at(self._read_deadline, self._read_timer_fired)
        else:
            self._on_read_timeout()

    def data_received(self, data: bytes) -> None:
        if not self.in_flight and data:
            self.unsolicited = True
            self.close()
            return
        super().data_received(data)

    @property
    def holds_extra_data(self) -> bool:
        """A further response (or part of one) was already parsed or buffered after the current one."""
        return self.unsolicited or bool(self._tail) or len(self) > 0


@dataclass(frozen=True, slots=True)
class Origin:
    """Where connections go: the pool key."""

    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(slots=True)
class PooledResponse:
    """An upstream response whose body is still on its connection."""

    status: int
    headers: CIMultiDictProxy[str]
    content: StreamReader
    protocol: UpstreamProtocol

    @property
    def content_type(self) -> str:
        value = self.headers.get("Content-Type", "application/octet-stream")
        return value.partition(";")[0].strip().lower()

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None and value.isdigit() else None


@dataclass(slots=True)
class _Idle:
    protocol: UpstreamProtocol
    since: float


class ConnectionPool:
    """Idle keep-alive connections by origin; a connection serves one request at a time."""

    def __init__(
        self, connect_timeout: float, first_byte_timeout: float, idle_timeout: float, keepalive_seconds: float = 30.0
    ) -> None:
        self.connect_timeout = connect_timeout
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        self.keepalive_seconds = keepalive_seconds  # below common upstream idle timeouts (60 s and more)
        self._idle: dict[Origin, list[_Idle]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def send(
        self, method: str, origin: Origin, target: str, headers: CIMultiDict[str], body: bytes | StreamedBody | None
    ) -> PooledResponse:
        """Send one request and return once its response headers arrived."""
        head = _request_head(method, origin, target, headers, body)
        protocol, reused = await self._acquire(origin)
        try:
            return await self._exchange(protocol, method, head, body)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            protocol.close()
            if not reused or isinstance(body, StreamedBody):
                raise
        except BaseException:  # cancelled, timed out, or our own upload refused itself: never reuse it
            protocol.close()
            raise
        # The upstream closed a kept-alive connection as we reused it: once more, on a fresh one.
        protocol = await self._connect(origin)
        try:
            return await self._exchange(protocol, method, head, body)
        except BaseException:
            protocol.close()
            raise

    def release(self, response: PooledResponse, origin: Origin) -> None:
        """Keep the connection for the next request only if its response was read exactly to its end.

        A connection that already holds bytes past this response is closed: its
        framing did not match, and the next client must never read them.
        """
        protocol = response.protocol
        protocol.in_flight = False
        reusable = response.content.is_eof() and not protocol.should_close and protocol.is_connected()
        if reusable and not protocol.holds_extra_data:
            self._idle.setdefault(origin, []).append(_Idle(protocol, time.monotonic()))
        else:
            protocol.close()

    def close(self) -> None:
        for idle in self._idle.values():
            for entry in idle:
                entry.protocol.close()
        self._idle.clear()

    async def _acquire(self, origin: Origin) -> tuple[UpstreamProtocol, bool]:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            entry = idle.pop()
            protocol = entry.protocol
            if protocol.is_connected() and not protocol.holds_extra_data and now - entry.since < self.keepalive_seconds:
                return protocol, True
            protocol.close()
        return await self._connect(origin), False

    async def _connect(self, origin: Origin) -> UpstreamProtocol:
        loop = asyncio.get_running_loop()
        tls = self._tls() if origin.scheme == "https" else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: UpstreamProtocol(loop),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except TimeoutError as exc:
            raise aiohttp.ConnectionTimeoutError(f"connecting to {origin.host_header} timed out") from exc
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {origin.host_header}: {exc.strerror or exc}") from exc
        return protocol

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _exchange(
        self, protocol: UpstreamProtocol, method: str, head: bytes, body: bytes | StreamedBody | None
    ) -> PooledResponse:
        protocol.set_response_params(timer=_TIMER, skip_payload=method == "HEAD", read_timeout=self.first_byte_timeout)
        protocol.in_flight = True
        await _write_request(protocol, head, body)
        protocol.start_timeout()
        while True:
            message, payload = await protocol.read()
            if not 100 <= message.code < 200 or message.code == 101:
                self._switch_to_idle_timeout(protocol, payload)
                return PooledResponse(message.code, message.headers, payload, protocol)

    def _switch_to_idle_timeout(self, protocol: UpstreamProtocol, payload: StreamReader) -> None:
        """Headers arrived: from now on the read timeout is the idle timeout.

        Only while body bytes are still to come: the protocol drops its read
        timer at end of body, and a timer armed after that would outlive the
        response (a 120 s timer per request piles up, and costs ~3x the CPU).
        """
        if not payload.is_eof():
            protocol.read_timeout = self.idle_timeout
            protocol.start_timeout()


def _request_head(
    method: str, origin: Origin, target: str, headers: CIMultiDict[str], body: bytes | StreamedBody | None
) -> bytes:
    """The request line and headers; the framing headers are derived from ``body`` alone."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {origin.host_header}"]
    if "Content-Length" in headers or "Transfer-Encoding" in headers:
        lines += [f"{name}: {value}" for name, value in headers.items() if name.lower() not in _FRAMING_HEADERS]
    else:
        lines += [f"{name}: {value}" for name, value in headers.items()]
    if "Accept-Encoding" not in headers:
        lines.append(f"Accept-Encoding: {_ACCEPT_ENCODING}")
    if isinstance(body, bytes):
        if body or method not in _NO_BODY_METHODS:
            lines.append(f"Content-Length: {len(body)}")
    elif body is not None:
        lines.append("Transfer-Encoding: chunked" if body.length is None else f"Content-Length: {body.length}")
    elif method not in _NO_BODY_METHODS:
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


async def _write_request(protocol: UpstreamProtocol, head: bytes, body: bytes | StreamedBody | None) -> None:
    transport = protocol.transport
    if transport is None:
        raise aiohttp.ServerDisconnectedError()
    if body is None or isinstance(body, bytes):
        transport.write(head + body if body else head)
        return
    transport.write(head)
    await _write_streamed(protocol, body)


async def _write_streamed(protocol: UpstreamProtocol, body: StreamedBody) -> None:
    """Stream an upload (chunk-encoded if its length is unknown), waiting when the upstream reads slowly.

    A declared length is a promise: a stream that breaks it raises before the
    upstream could read past the request (the caller closes the connection).
    """
    chunked = body.length is None
    sent = 0
    async for chunk in body.chunks:
        transport = protocol.transport
        if transport is None:
            raise aiohttp.ServerDisconnectedError()
        if not chunk:
            continue
        sent += len(chunk)
        if body.length is not None and sent > body.length:
            raise aiohttp.ClientPayloadError(f"upload is longer than its declared {body.length} bytes")
        transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        if transport.get_write_buffer_size() > _WRITE_HIGH_WATER:
            await protocol._drain_helper()  # aiohttp's flow control; no public equivalent
    if body.length is not None and sent != body.length:
        raise aiohttp.ClientPayloadError(f"upload ended after {sent} of its declared {body.length} bytes")
    if chunked and protocol.transport is not None:
        protocol.transport.write(b"0\r\n\r\n")
