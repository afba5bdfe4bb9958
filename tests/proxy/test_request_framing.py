"""Request framing: no client header decides how many bytes the upstream reads (no request smuggling).

The upstream here is a raw keep-alive server that frames requests by their
own headers and decodes nothing, like uvicorn, Node, Go or nginx. Every test
asserts what each upstream connection carried: a smuggled request would be
one more request on a connection, a poisoned response one more answer.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import random
import string
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from celgate.proxy.settings import Secret
from tests.helpers import StartCelgate, assert_openai_error, write_policy
from tests.helpers.rawupstream import RawRequest, RawUpstream, default_response, json_response

CLIENT_KEY = "sk-framing-client-0123456789"
UPSTREAM_KEY = "sk-framing-upstream-9876543210"
SMUGGLED = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 4000\r\n\r\n"  # open-ended: it would swallow celgate's next request, key and all
)


def compress(coding: str, data: bytes) -> bytes:
    return gzip.compress(data, mtime=0) if coding == "gzip" else zlib.compress(data)


def chat_json(**extra: object) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}).encode()


def fixed_point_chat_body() -> bytes:
    """A chat body whose gzip encoding is exactly as long as the body itself (found by search)."""
    alphabet = string.ascii_letters + string.digits + "!#$%&()*+,-./:;<=>?@[]^_`{|}~ "
    noise = "".join(random.Random(0).choice(alphabet) for _ in range(400))
    for size in range(len(noise)):
        body = chat_json(pad=noise[:size])
        if len(gzip.compress(body, mtime=0)) == len(body):
            return body
    raise AssertionError("no fixed point found")


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    return write_policy(
        tmp_path,
        "version: 1\ndefaults:\n  decision: allow\nprincipals:\n  - id: client\n"
        f"    key_sha256: {hashlib.sha256(CLIENT_KEY.encode()).hexdigest()}\n",
        "p.yaml",
    )


def assert_forwarded_once(upstream: RawUpstream, target: str, body: bytes) -> RawRequest:
    """Exactly one request went upstream, on one connection, with the decoded body and no coding."""
    assert [[r.target for r in c] for c in upstream.connections] == [[target]]
    [request] = upstream.requests
    assert request.body == body
    assert "content-encoding" not in request.headers
    if "content-length" in request.headers:
        assert int(request.headers["content-length"]) == len(body)
    else:
        assert request.headers["transfer-encoding"] == "chunked"
    return request


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
@pytest.mark.parametrize(
    ("path", "content_type", "decoded"),
    [
        ("/chat/completions", "application/json", chat_json()),
        # the decoded body must be one JSON object (data after it is a 400): the request rides in a string
        ("/embeddings", "application/json", json.dumps({"input": SMUGGLED.decode() * 4, "model": "m"}).encode()),
        ("/files", "application/octet-stream", b"A" * 64 + SMUGGLED),
        ("/audio/transcriptions", "multipart/form-data; boundary=x", b"--x\r\n\r\n" + SMUGGLED),
    ],
)
async def test_a_compressed_upload_is_forwarded_decoded_and_framed_by_its_decoded_length(
    raw_upstream: RawUpstream,
    start_celgate: StartCelgate,
    http: aiohttp.ClientSession,
    coding: str,
    path: str,
    content_type: str,
    decoded: bytes,
) -> None:
    celgate = await start_celgate(upstream=raw_upstream.base_url)
    encoded = compress(coding, decoded)
    headers = {"Content-Encoding": coding, "Content-Type": content_type}
    async with http.post(celgate.url + path, data=encoded, headers=headers) as response:
        assert response.status == 200, await response.text()
    async with http.get(celgate.url + "/models") as response:  # the next request: the connection is clean
        assert response.status == 200
    assert [[r.target for r in c] for c in raw_upstream.connections] == [["/v1" + path, "/v1/models"]]
    sent = raw_upstream.requests[0]
    assert sent.body == decoded and "content-encoding" not in sent.headers


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_a_compressed_chunked_upload_goes_chunked(
    raw_upstream: RawUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession, coding: str
) -> None:
    celgate = await start_celgate(upstream=raw_upstream.base_url)
    decoded = os.urandom(40_000) + SMUGGLED
    encoded = compress(coding, decoded)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(encoded), 4096):
            yield encoded[start : start + 4096]

    headers = {"Content-Encoding": coding, "Content-Type": "application/octet-stream"}
    async with http.post(celgate.url + "/files", data=pieces(), headers=headers) as response:
        assert response.status == 200
    assert_forwarded_once(raw_upstream, "/v1/files", decoded)


async def test_an_uncompressed_upload_keeps_its_exact_length(
    raw_upstream: RawUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession
) -> None:
    celgate = await start_celgate(upstream=raw_upstream.base_url)
    body = b"B" * 70_000
    async with http.post(celgate.url + "/files", data=body, headers={"Content-Type": "application/octet-stream"}) as r:
        assert r.status == 200
    request = assert_forwarded_once(raw_upstream, "/v1/files", body)
    assert request.headers["content-length"] == str(len(body))


async def test_a_fixed_point_payload_is_still_forwarded_decoded(
    raw_upstream: RawUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession
) -> None:
    """Compressed and decoded lengths are equal: a length comparison alone could not tell them apart."""
    celgate = await start_celgate(upstream=raw_upstream.base_url)
    decoded = fixed_point_chat_body()
    encoded = gzip.compress(decoded, mtime=0)
    assert len(encoded) == len(decoded)
    for path in ("/chat/completions", "/embeddings"):
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        async with http.post(celgate.url + path, data=encoded, headers=headers) as response:
            assert response.status == 200
    assert [[r.target for r in c] for c in raw_upstream.connections] == [["/v1/chat/completions", "/v1/embeddings"]]
    assert all(r.body == decoded and "content-encoding" not in r.headers for r in raw_upstream.requests)


async def test_sidecar_mode_never_lets_the_upstream_key_land_in_a_client_body(
    raw_upstream: RawUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession, policy_dir: Path
) -> None:
    celgate = await start_celgate(
        upstream=raw_upstream.base_url, no_policy=False, policies=policy_dir, upstream_api_key=Secret(UPSTREAM_KEY)
    )
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    decoded = b"C" * 32 + SMUGGLED
    headers = {**auth, "Content-Encoding": "gzip", "Content-Type": "application/octet-stream"}
    async with http.post(celgate.url + "/files", data=gzip.compress(decoded), headers=headers) as response:
        assert response.status == 200
    async with http.post(celgate.url + "/chat/completions", data=chat_json(), headers=auth) as response:
        assert response.status == 200
        assert (await response.json())["object"] == "chat.completion"
    assert [[r.target for r in c] for c in raw_upstream.connections] == [["/v1/files", "/v1/chat/completions"]]
    assert all(UPSTREAM_KEY.encode() not in r.body for r in raw_upstream.requests)
    assert [r.headers["authorization"] for r in raw_upstream.requests] == [f"Bearer {UPSTREAM_KEY}"] * 2


@pytest.mark.parametrize(
    "codings",
    [["compress"], ["gzip, gzip"], ["gzip", "gzip"], ["x-gzip"], ["gzip, identity"], ["br;q=1"]],
    ids=lambda c: "+".join(c),
)
@pytest.mark.parametrize("path", ["/chat/completions", "/embeddings", "/files"])
async def test_a_coding_aiohttp_did_not_decode_is_refused_with_415(
    raw_upstream: RawUpstream,
    start_celgate: StartCelgate,
    http: aiohttp.ClientSession,
    codings: list[str],
    path: str,
) -> None:
    celgate = await start_celgate(upstream=raw_upstream.base_url)
    headers = CIMultiDict([("Content-Type", "application/json"), *(("Content-Encoding", c) for c in codings)])
    async with http.post(celgate.url + path, data=gzip.compress(chat_json()), headers=headers) as response:
        assert response.status == 415
        assert_openai_error(await response.json(), code="unsupported_content_encoding")
    assert raw_upstream.requests == []


async def test_identity_coding_is_forwarded_without_the_header(
    raw_upstream: RawUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession
) -> None:
    celgate = await start_celgate(upstream=raw_upstream.base_url)
    headers = {"Content-Encoding": "identity", "Content-Type": "application/json"}
    async with http.post(celgate.url + "/chat/completions", data=chat_json(), headers=headers) as response:
        assert response.status == 200
    assert_forwarded_once(raw_upstream, "/v1/chat/completions", chat_json())


def evil_response(text: bytes = b"EVIL!") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text)


@pytest.mark.parametrize("when", ["same write", "while idle"])
async def test_a_connection_that_answers_twice_is_never_reused(
    raw_upstream: RawUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession, when: str
) -> None:
    """Bytes past a response (a second answer, or part of one) close the connection: the next client gets its own."""
    answered: list[str] = []

    def respond(request: RawRequest) -> bytes | list[bytes]:
        answered.append(request.target)
        if len(answered) > 1:
            return default_response(request)
        first = json_response({"first": True})
        return first + evil_response() if when == "same write" else [first, evil_response()[:20], evil_response()[20:]]

    raw_upstream.responder = respond
    celgate = await start_celgate(upstream=raw_upstream.base_url)
    async with http.post(celgate.url + "/embeddings", json={"input": "x"}) as response:
        assert await response.json() == {"first": True}
    if when == "while idle":
        await asyncio.sleep(0.2)
    async with http.post(celgate.url + "/embeddings", json={"input": "y"}) as response:
        body = await response.read()
    assert b"EVIL" not in body and json.loads(body)["target"] == "/v1/embeddings"
    assert [[r.target for r in c] for c in raw_upstream.connections] == [["/v1/embeddings"], ["/v1/embeddings"]]
