"""Upstream faults are translated in one place: every exception the pool can raise has a celgate error."""

from __future__ import annotations

import ssl

import aiohttp
import pytest

from celgate.proxy.errors import PayloadTooLarge, UpstreamTimeout, UpstreamUnavailable
from celgate.proxy.pool import ConnectFailed
from celgate.proxy.upstream import FAULTS, translate


def _cases() -> list[tuple[BaseException, type, str | None]]:
    return [
        (TimeoutError(), UpstreamTimeout, "upstream_timeout"),
        (TimeoutError(), UpstreamTimeout, "upstream_timeout"),
        (aiohttp.ServerTimeoutError("Timeout on reading data from socket"), UpstreamTimeout, "upstream_timeout"),
        (aiohttp.ConnectionTimeoutError("connect"), UpstreamTimeout, "upstream_timeout"),
        (aiohttp.SocketTimeoutError("read"), UpstreamTimeout, "upstream_timeout"),
        (aiohttp.ClientPayloadError("cut"), UpstreamUnavailable, "upstream_reset"),
        (ConnectFailed("refused"), UpstreamUnavailable, "upstream_unreachable"),
        (aiohttp.ServerDisconnectedError(), UpstreamUnavailable, "upstream_reset"),
        (aiohttp.ClientOSError(104, "reset"), UpstreamUnavailable, "upstream_reset"),
        (ConnectionResetError(104, "reset"), UpstreamUnavailable, "upstream_reset"),
        (BrokenPipeError(32, "broken pipe"), UpstreamUnavailable, "upstream_reset"),
        (ssl.SSLError("tls"), UpstreamUnavailable, "upstream_reset"),
        (OSError(113, "No route to host"), UpstreamUnavailable, "upstream_reset"),
        (aiohttp.http_exceptions.BadHttpMessage("garbage"), UpstreamUnavailable, "upstream_bad_response"),
        (aiohttp.http_exceptions.BadStatusLine("HTTP/9"), UpstreamUnavailable, "upstream_bad_response"),
        (aiohttp.http_exceptions.LineTooLong("line"), UpstreamUnavailable, "upstream_bad_response"),
        (aiohttp.http_exceptions.TransferEncodingError("te"), UpstreamUnavailable, "upstream_bad_response"),
        (aiohttp.http_exceptions.ContentEncodingError("ce"), UpstreamUnavailable, "upstream_bad_response"),
        (aiohttp.ClientConnectionError("gone"), UpstreamUnavailable, "upstream_reset"),
    ]


@pytest.mark.parametrize(
    ("exc", "expected", "code"), _cases(), ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else ""
)
def test_every_pool_fault_is_translated(exc: BaseException, expected: type, code: str) -> None:
    assert isinstance(exc, FAULTS)
    error = translate(exc)
    assert type(error) is expected and error.code == code and error.message


def test_an_upload_refusing_itself_stays_the_clients_error() -> None:
    """A 413 raised while streaming the client's upload is not an upstream fault."""
    refused = PayloadTooLarge("too big")
    try:
        raise aiohttp.ClientPayloadError("upload failed") from refused
    except aiohttp.ClientPayloadError as exc:
        assert translate(exc) is refused
