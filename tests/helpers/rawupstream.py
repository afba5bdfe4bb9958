"""A raw-socket keep-alive HTTP/1.1 upstream that parses requests strictly and decodes nothing.

Like uvicorn, Node, Go or nginx in front of an app, it frames each request by
its own ``Content-Length`` or chunked encoding, ignores ``Content-Encoding``,
and keeps the connection open. Every request is recorded per connection, so
a test can assert that each upstream connection carried exactly the requests
celgate meant to send: a smuggled request shows up as one more.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["RawRequest", "RawUpstream"]


@dataclass
class RawRequest:
    method: str
    target: str
    headers: dict[str, str]  # lower-cased names
    body: bytes


# What to write back: one response, or several pieces written 50 ms apart (bytes after the response
# arrive while celgate holds the connection idle).
Responder = Callable[[RawRequest], bytes | list[bytes]]


def json_response(obj: object, status: int = 200) -> bytes:
    body = json.dumps(obj).encode()
    head = f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def default_response(request: RawRequest) -> bytes:
    """A chat completion for chat, a model list for models, an echo of the body size for anything else."""
    if request.target.endswith("/chat/completions"):
        return json_response(
            {
                "id": "chatcmpl-raw",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            }
        )
    if request.target.endswith("/models"):
        return json_response(
            {"object": "list", "data": [{"id": "m", "object": "model", "created": 1, "owned_by": "x"}]}
        )
    return json_response({"target": request.target, "received": len(request.body)})


@dataclass
class RawUpstream:
    """Start with ``await start()``; ``connections`` lists each connection's requests in order."""

    responder: Responder = default_response
    connections: list[list[RawRequest]] = field(default_factory=list)
    base_url: str = ""
    _server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def requests(self) -> list[RawRequest]:
        return [request for connection in self.connections for request in connection]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen: list[RawRequest] = []
        self.connections.append(seen)
        try:
            while (request := await _read_request(reader)) is not None:
                seen.append(request)
                answer = self.responder(request)
                for index, piece in enumerate([answer] if isinstance(answer, bytes) else answer):
                    if index:
                        await asyncio.sleep(0.05)
                    writer.write(piece)
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> RawRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise ValueError("connection closed inside a request head") from exc
        return None
    line, *fields = head[:-4].decode("latin-1").split("\r\n")
    method, target, _version = line.split(" ")
    headers: dict[str, str] = {}
    for item in fields:
        name, _, value = item.partition(":")
        if name.lower() in headers:
            raise ValueError(f"repeated header {name}")
        headers[name.lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawRequest(method, target, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)
