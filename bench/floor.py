"""An experiment, not a proxy: the floor of a Python forwarder on raw asyncio protocols and llhttp (httptools).

Issue 12 asks for celgate at 0.4x the CPU of a typical aiohttp forwarder
(``aiohttp-ref``). This measures what a different HTTP core would allow: the
client and upstream sides are ``asyncio.Protocol`` classes driving
``httptools`` (llhttp, the parser aiohttp and uvicorn use), with one
keep-alive upstream connection per client connection, the request JSON
parsed (as ``aiohttp-ref`` does), and SSE relayed chunk by chunk as it
arrives. It has none of what a security proxy needs (timeouts, limits,
header checks, framing validation, TLS, errors, drains, metrics, logs), so
it is a lower bound, never a design to ship as is.

Run it where the shared harness runs celgate (it takes ``serve`` and
celgate's flags and ignores what it does not use), from an executable that
runs this file with celgate's Python::

    .venv/bin/pip install httptools
    printf '#!/bin/sh\nexec %s/.venv/bin/python %s/bench/floor.py "$@"\n' "$PWD" "$PWD" > /tmp/floor
    chmod +x /tmp/floor
    BENCH_POLICIES= CELGATE_BIN=/tmp/floor ../shared/bench/run.sh aiohttp-ref celgate

or count its instructions per request: ``python bench/request_cost.py --target floor``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from urllib.parse import urlsplit

import httptools
import uvloop

_FORWARDED = (b"content-type", b"authorization", b"accept", b"user-agent")


class _Upstream(asyncio.Protocol):
    """One keep-alive upstream connection; its response is relayed to ``client`` as it is parsed."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.ready = asyncio.get_running_loop().create_future()
        self.client: _Client | None = None
        self.chunks: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ready.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_headers_complete(self) -> None:
        assert self.client is not None
        self.client.upstream_head(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        assert self.client is not None
        self.client.upstream_body(body)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        assert client is not None
        client.upstream_done()


class _Client(asyncio.Protocol):
    """One client connection: requests in order, each forwarded and relayed."""

    def __init__(self, upstream: tuple[str, int, bytes]) -> None:
        self.host, self.port, self.prefix = upstream
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.upstream: _Upstream | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.stream = False
        self.held: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        headers, self.headers, self.body = self.headers, [], []
        asyncio.get_running_loop().create_task(self.forward(headers, body))

    async def forward(self, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.stream = json.loads(body).get("stream") is True
        if self.upstream is None:
            loop = asyncio.get_running_loop()
            _, self.upstream = await loop.create_connection(_Upstream, self.host, self.port)
            await self.upstream.ready
        self.upstream.client = self
        head = [b"POST %s/chat/completions HTTP/1.1\r\nhost: %s:%d\r\n" % (self.prefix, self.host.encode(), self.port)]
        head += [b"%s: %s\r\n" % (name, value) for name, value in headers if name in _FORWARDED]
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        assert self.upstream.transport is not None
        self.upstream.transport.writelines([*head, body])

    def upstream_head(self, status: int) -> None:
        if self.stream and self.transport is not None:
            self.transport.write(
                b"HTTP/1.1 %d OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n" % status
            )

    def upstream_body(self, body: bytes) -> None:
        if not self.stream:
            self.held.append(body)
        elif self.transport is not None:
            self.transport.writelines([b"%x\r\n" % len(body), body, b"\r\n"])

    def upstream_done(self) -> None:
        if self.transport is None:
            return
        if self.stream:
            self.transport.write(b"0\r\n\r\n")
            return
        body, self.held = b"".join(self.held), []
        self.transport.writelines(
            [b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body), body]
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="serve", choices=["serve"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--upstream", required="--version" not in (argv or sys.argv))
    parser.add_argument("--no-policy", action="store_true", help="accepted for the harness; there is no policy")
    parser.add_argument("--version", action="version", version=f"floor experiment, httptools {httptools.__version__}")
    args, _ = parser.parse_known_args(argv)
    url = urlsplit(args.upstream)
    upstream = (url.hostname or "127.0.0.1", url.port or 80, url.path.rstrip("/").encode())

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(lambda: _Client(upstream), args.host, args.port)
        await server.serve_forever()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
