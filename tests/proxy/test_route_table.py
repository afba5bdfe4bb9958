"""The route table fails closed: canonical paths only, governed routes governed, unknown routes refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from celgate.policy import Kind, NonCanonicalPath, classify
from tests.helpers import ALLOW_REQUESTS, Celgate, StartCelgate, assert_openai_error, write_policy
from tests.helpers.fakeupstream import FakeUpstream

POLICY = (
    ALLOW_REQUESTS
    + """\
  - name: no-shell
    on: tool_call
    tools: ["shell.exec"]
    effect: deny
  - name: other-tools
    on: tool_call
    effect: allow
"""
)
OPENED = (
    POLICY
    + """\
routes:
  - id: batches-for-everyone
    paths: ["/v1/batches", "/v1/batches/**"]
    methods: ["GET", "POST"]
"""
)

NON_CANONICAL = [
    "/v1/chat/completions/",
    "/v1//chat/completions",
    "/v1/chat//completions",
    "/v1/./chat/completions",
    "/v1/chat/./completions",
    "/v1/x/../chat/completions",
    "/v1/chat/completions/.",
    "/v1/Chat/completions",
    "/v1/CHAT/COMPLETIONS",
    "/v1/chat/Completions",
    "/v1/chat%2Fcompletions",
    "/v1/chat%2fcompletions",
    "/v1/%63hat/completions",
    "/v1/chat/completion%73",
    "/v1/chat/completions%2F",
    "/v1/chat/completions;x",
    "/v1/chat/completions%3Bx",
    "/v1/chat\\completions",
    "/v1/files/..%2Fchat%2Fcompletions",
    "/v1/files/%2E%2E/chat/completions",
    "/v1/Responses",
    "/v1/responses/",
    "/v1//responses",
    "/v1/responses%2F",
    "/v1/models/%2e%2e",
    "/v1/chat/completions%00",
]


@pytest.mark.parametrize("path", NON_CANONICAL)
def test_non_canonical_paths_are_refused(path: str) -> None:
    with pytest.raises(NonCanonicalPath, match="not a canonical API path"):
        classify("POST", path)


@pytest.mark.parametrize(
    ("method", "path", "kind", "name"),
    [
        ("POST", "/v1/chat/completions", Kind.GOVERNED, "chat.create"),
        ("GET", "/v1/chat/completions", Kind.GOVERNED, "chat.list"),
        ("GET", "/v1/chat/completions/chatcmpl-123", Kind.GOVERNED, "chat.retrieve"),
        ("GET", "/v1/chat/completions/chatcmpl-123/messages", Kind.GOVERNED, "chat.messages"),
        ("POST", "/v1/responses", Kind.GOVERNED, "responses.create"),
        ("GET", "/v1/responses/resp_1", Kind.GOVERNED, "responses.retrieve"),
        ("GET", "/v1/responses/resp_1/input_items", Kind.GOVERNED, "responses.input_items"),
        ("POST", "/v1/responses/resp_1/cancel", Kind.GOVERNED, "responses.cancel"),
        ("GET", "/v1/models", Kind.GOVERNED, "models.list"),
        ("DELETE", "/v1/responses/resp_1", Kind.TOOL_FREE, "tool-free"),
        ("POST", "/v1/embeddings", Kind.TOOL_FREE, "tool-free"),
        ("GET", "/v1/models/ft:gpt-4o:org:x", Kind.TOOL_FREE, "tool-free"),
        ("GET", "/v1/models/meta-llama%2FLlama-3", Kind.TOOL_FREE, "tool-free"),
        ("POST", "/v1/files", Kind.TOOL_FREE, "tool-free"),
        ("GET", "/v1/files/file-1/content", Kind.TOOL_FREE, "tool-free"),
        ("POST", "/v1/audio/transcriptions", Kind.TOOL_FREE, "tool-free"),
        ("POST", "/v1/realtime/sessions", Kind.NOT_GOVERNED, "not governed"),
        ("POST", "/v1/threads/runs", Kind.NOT_GOVERNED, "not governed"),
        ("POST", "/v1/batches", Kind.NOT_GOVERNED, "not governed"),
        ("POST", "/v1/conversations", Kind.NOT_GOVERNED, "not governed"),
        ("POST", "/v1/something-new", Kind.NOT_GOVERNED, "not governed"),
        ("PUT", "/v1/chat/completions", Kind.NOT_GOVERNED, "not governed"),
        ("GET", "/v1/responses/resp.1", Kind.NOT_GOVERNED, "not governed"),
    ],
)
def test_paths_are_classified(method: str, path: str, kind: Kind, name: str) -> None:
    match = classify(method, path)
    assert (match.kind, match.name) == (kind, name)


async def raw_request(root: str, request_line: bytes, body: bytes = b"{}") -> tuple[int, bytes]:
    """Send one request exactly as written (no client normalises the path)."""
    host, port = root.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        request_line + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, rest = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), rest


@pytest.mark.parametrize("path", NON_CANONICAL)
async def test_every_variant_is_refused_on_a_real_socket_and_nothing_goes_upstream(
    upstream: FakeUpstream, start_celgate: StartCelgate, tmp_path: Path, path: str
) -> None:
    gate = await start_celgate(upstream=upstream.base_url, no_policy=False, policies=write_policy(tmp_path, POLICY))
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    status, answer = await raw_request(gate.root, b"POST " + path.encode(), body)
    assert status in (400, 404), answer  # 404: aiohttp itself refused a path it could not parse
    assert upstream.requests == []


async def test_an_unknown_route_is_refused_then_opened_by_policy(
    upstream: FakeUpstream, start_celgate: StartCelgate, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    gate = await start_celgate(upstream=upstream.base_url, no_policy=False, policies=write_policy(tmp_path, POLICY))
    async with http.post(gate.url + "/batches", json={"input_file_id": "f"}) as response:
        assert response.status == 403
        error = assert_openai_error(await response.json(), code="route_not_governed")
        assert "/v1/batches" in error["message"]
    assert upstream.requests == []
    await gate.stop()
    opened = await start_celgate(
        upstream=upstream.base_url,
        no_policy=False,
        policies=write_policy(tmp_path / "o", OPENED) if (tmp_path / "o").mkdir() is None else None,
    )
    async with http.post(opened.url + "/batches", json={"input_file_id": "f"}) as response:
        assert response.status == 200
    async with http.post(opened.url + "/realtime/sessions", json={}) as response:
        assert response.status == 403  # only what the entry names
    assert [r.path for r in upstream.requests] == ["/v1/batches"]


async def test_no_policy_mode_passes_unknown_routes(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    async with http.post(celgate.url + "/batches", json={}) as response:
        assert response.status == 200
    assert [r.path for r in upstream.requests] == ["/v1/batches"]
