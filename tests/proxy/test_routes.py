"""Routes: x-request-id, /v1/* passthrough (JSON, SSE, uploads), header hygiene, /v1/models, /healthz, /readyz."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.helpers import Celgate, OpenAIFactory, StartCelgate, free_port
from tests.helpers.fakeupstream import FakeUpstream, Script, Step, sse

PROMPT = {"model": "fake-model", "messages": [{"role": "user", "content": "Hi"}]}


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


# -------------------------------------------------------------------------------- x-request-id


async def test_request_id_from_the_client_is_returned_and_forwarded(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        celgate.url + "/chat/completions", json=PROMPT, headers={"x-request-id": "client-id-123"}
    ) as response:
        assert response.status == 200
        assert response.headers["x-request-id"] == "client-id-123"
    assert lower(upstream.requests[0].headers)["x-request-id"] == "client-id-123"


async def test_request_id_is_generated_when_absent(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    ids = []
    for _ in range(2):
        async with http.post(celgate.url + "/chat/completions", json={**PROMPT, "stream": True}) as response:
            await response.read()
            ids.append(response.headers["x-request-id"])
    assert all(ids) and ids[0] != ids[1]
    assert [lower(r.headers)["x-request-id"] for r in upstream.requests] == ids


async def test_request_id_on_passthrough_and_errors(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        celgate.url + "/embeddings", json={"input": "x"}, headers={"X-Request-ID": "emb-1"}
    ) as response:
        assert response.headers["x-request-id"] == "emb-1"
    assert lower(upstream.requests[-1].headers)["x-request-id"] == "emb-1"
    async with http.post(celgate.url + "/chat/completions", data=b"{", headers={"x-request-id": "bad-1"}) as response:
        assert response.status == 400
        assert response.headers["x-request-id"] == "bad-1"
    async with http.get(celgate.root + "/nope", headers={"x-request-id": "nf-1"}) as response:
        assert response.headers["x-request-id"] == "nf-1"


async def test_an_unusable_request_id_is_replaced(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        celgate.url + "/chat/completions", json=PROMPT, headers={"x-request-id": "x" * 500}
    ) as response:
        returned = response.headers["x-request-id"]
    assert returned and len(returned) <= 128
    assert lower(upstream.requests[0].headers)["x-request-id"] == returned


async def test_openai_client_sees_the_request_id(celgate: Celgate, oai: OpenAIFactory) -> None:
    raw = await oai(celgate.url).chat.completions.with_raw_response.create(
        model="fake-model", messages=PROMPT["messages"], extra_headers={"x-request-id": "sdk-1"}
    )
    assert raw.headers["x-request-id"] == "sdk-1"
    assert raw.parse().choices[0].message.content == "Hello world"


# --------------------------------------------------------------------------------- passthrough


async def test_embeddings_forwarded_verbatim_both_ways_with_query_string(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    answer = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -1.5e-3, 3]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    upstream.push(Script(json=answer, headers={"openai-model": "text-embedding-3-small"}))
    raw = b'{"model": "text-embedding-3-small",  "input": ["caf\\u00e9", "x"], "encoding_format": "float"}'
    async with http.post(
        celgate.url + "/embeddings?api-version=2024-02-01&x=a%20b&plus=1%2B1&amp=a%26b=c&e=",
        data=raw,
        headers={"Content-Type": "application/json", "Authorization": "Bearer sk-emb"},
    ) as response:
        assert response.status == 200
        assert await response.read() == json.dumps(answer).encode()
        assert response.headers["openai-model"] == "text-embedding-3-small"
    [recorded] = upstream.requests
    assert recorded.method == "POST"
    assert recorded.raw_path == "/v1/embeddings?api-version=2024-02-01&x=a%20b&plus=1%2B1&amp=a%26b=c&e="
    assert recorded.raw == raw
    assert recorded.headers["Authorization"] == "Bearer sk-emb"


async def test_embeddings_with_the_openai_client(celgate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory) -> None:
    upstream.push(
        Script(
            json={
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [1.0, 2.0]}],
                "model": "e",
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        )
    )
    result = await oai(celgate.url).embeddings.create(model="e", input="hi", encoding_format="float")
    assert result.data[0].embedding == [1.0, 2.0]
    assert upstream.requests[0].path == "/v1/embeddings"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_other_methods_are_forwarded(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, method: str
) -> None:
    upstream.push(Script(json={"id": "file-1", "object": "file", "deleted": method == "DELETE"}))
    async with http.request(method, celgate.url + "/files/file-1?limit=2") as response:
        assert response.status == 200
        assert (await response.json())["deleted"] is (method == "DELETE")
    assert (upstream.requests[0].method, upstream.requests[0].path) == (method, "/v1/files/file-1?limit=2")


async def test_encoded_path_segments_are_forwarded_as_encoded(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    from yarl import URL

    url = URL(celgate.url + "/vector_stores/vs%2F1/files/a%20b%2Bc?after=x%26y", encoded=True)
    async with http.get(url) as response:
        assert response.status == 200
    assert upstream.requests[0].raw_path == "/v1/vector_stores/vs%2F1/files/a%20b%2Bc?after=x%26y"


async def test_streaming_passthrough_arrives_incrementally(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()
    events = [
        b"event: response.created\ndata: " + json.dumps({"type": "response.created"}).encode() + b"\n\n",
        b"event: response.output_text.delta\ndata: "
        + json.dumps({"type": "response.output_text.delta", "delta": "Hi"}).encode()
        + b"\n\n",
        b"event: response.completed\ndata: " + json.dumps({"type": "response.completed"}).encode() + b"\n\n",
    ]
    upstream.push(Script(steps=[Step(events[0]), Step(events[1]), Step(events[2], wait=release)]))
    async with http.post(
        celgate.url + "/responses", json={"model": "fake-model", "input": "hi", "stream": True}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        received = bytearray()
        while b"output_text.delta" not in received:
            data = await response.content.readany()
            assert data
            received += data
        assert not release.is_set() and b"response.completed" not in received
        release.set()
        received += await response.read()
    assert bytes(received) == b"".join(events)
    assert upstream.requests[0].path == "/v1/responses"


async def test_passthrough_stream_cut_mid_body_ends_with_an_error_event(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    first = b"event: response.created\ndata: {}\n\n"
    upstream.push(Script(steps=[Step(first), Step(reset=True)]))
    async with http.post(celgate.url + "/responses", json={"model": "m", "input": "hi", "stream": True}) as response:
        body = await response.read()
    assert body.startswith(first)
    assert body[len(first) :].startswith(b"event: error\ndata: ")


async def test_non_sse_passthrough_cut_mid_body_is_not_made_to_look_complete(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.push(
        Script(headers={"Content-Type": "application/octet-stream"}, steps=[Step(b"\0" * 100), Step(reset=True)])
    )
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.get(celgate.url + "/files/file-1/content") as response:
            await response.read()


@pytest.mark.parametrize("path", ["/chat/completions", "/embeddings"])
async def test_a_compressed_upstream_body_reaches_the_client_decoded(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, path: str
) -> None:
    import gzip

    answer = json.dumps({"object": "list", "data": [], "note": "zipped" * 50}).encode()
    packed = gzip.compress(answer)
    upstream.push(
        Script(
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            steps=[Step(packed[:20]), Step(packed[20:])],
        )
    )
    async with http.post(celgate.url + path, json=PROMPT, headers={"Accept-Encoding": "gzip"}) as response:
        assert response.status == 200
        assert "Content-Encoding" not in response.headers
        assert await response.read() == answer


@pytest.mark.parametrize("path", ["/chat/completions", "/embeddings"])
async def test_upstream_is_only_offered_codings_celgate_can_decode(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, path: str
) -> None:
    """celgate decodes upstream bodies itself: a client's ``br``/``zstd`` must not reach an upstream it can't decode."""
    from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD

    async with http.post(celgate.url + path, json=PROMPT, headers={"Accept-Encoding": "br, zstd, gzip"}) as response:
        assert response.status == 200
    offered = lower(upstream.requests[0].headers).get("accept-encoding", "")
    decodable = {"gzip", "deflate", "identity"} | ({"br"} if HAS_BROTLI else set()) | ({"zstd"} if HAS_ZSTD else set())
    assert {c.strip() for c in offered.split(",") if c.strip()} <= decodable


async def test_non_json_upload_is_streamed_upstream(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    """The upstream receives the first part of an upload before the client has sent the rest."""
    parts = [b"\x00\x01binary-part-1" * 100, b"part-2" * 100, b"end"]

    async def body() -> AsyncIterator[bytes]:
        yield parts[0]
        await asyncio.wait_for(upstream.first_body_chunk.wait(), timeout=5)  # would time out if celgate buffered
        for part in parts[1:]:
            yield part

    upstream.push(Script(json={"id": "file-1", "object": "file"}))
    async with http.post(
        celgate.url + "/files", data=body(), headers={"Content-Type": "application/octet-stream"}
    ) as response:
        assert response.status == 200
        assert await response.json() == {"id": "file-1", "object": "file"}
    assert upstream.requests[0].raw == b"".join(parts)
    assert upstream.requests[0].headers["Content-Type"] == "application/octet-stream"
    assert lower(upstream.requests[0].headers)["transfer-encoding"] == "chunked"  # as the client sent it


async def test_streamed_upload_with_a_length_keeps_its_length(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    payload = bytes(range(256)) * 40
    upstream.push(Script(json={"id": "file-3", "object": "file"}))
    async with http.post(
        celgate.url + "/files", data=payload, headers={"Content-Type": "application/octet-stream"}
    ) as response:
        assert response.status == 200
    received = lower(upstream.requests[0].headers)
    assert received["content-length"] == str(len(payload))
    assert "transfer-encoding" not in received
    assert upstream.requests[0].raw == payload


async def test_multipart_upload_is_forwarded_intact(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    form = aiohttp.FormData()
    form.add_field("purpose", "fine-tune")
    form.add_field("file", b'{"prompt": "a"}\n' * 50, filename="train.jsonl", content_type="application/jsonl")
    upstream.push(Script(json={"id": "file-2", "object": "file"}))
    async with http.post(celgate.url + "/files", data=form) as response:
        assert response.status == 200
        sent_type = response.request_info.headers["Content-Type"]
    recorded = upstream.requests[0]
    assert recorded.headers["Content-Type"] == sent_type and sent_type.startswith("multipart/form-data; boundary=")
    assert b'name="purpose"' in recorded.raw and b"fine-tune" in recorded.raw
    assert recorded.raw.count(b'{"prompt": "a"}\n') == 50


async def test_audio_transcription_upload_through_the_openai_client(
    celgate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    upstream.push(Script(json={"text": "hello"}))
    result = await oai(celgate.url).audio.transcriptions.create(
        model="whisper-1", file=("a.wav", b"RIFF" + b"\0" * 2000)
    )
    assert result.text == "hello"
    assert upstream.requests[0].path == "/v1/audio/transcriptions"
    assert b"RIFF" + b"\0" * 2000 in upstream.requests[0].raw


async def test_upstream_base_path_is_kept(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession
) -> None:
    celgate = await start_celgate(upstream=upstream.base_url.replace("/v1", "/openai/deployments/x/v1/"))
    async with http.post(celgate.url + "/chat/completions?api-version=1", json=PROMPT) as response:
        assert response.status == 200
    async with http.get(celgate.url + "/models") as response:
        assert response.status == 200
    assert [r.raw_path for r in upstream.requests] == [
        "/openai/deployments/x/v1/chat/completions?api-version=1",
        "/openai/deployments/x/v1/models",
    ]


# -------------------------------------------------------------------------------- header hygiene


HOP_BY_HOP = {
    "Connection": "keep-alive, X-Named-In-Connection",
    "Keep-Alive": "timeout=5",
    "TE": "trailers",
    "Upgrade": "websocket",
    "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0",
    "X-Named-In-Connection": "drop me",
    "Proxy-Connection": "keep-alive",
    "Trailer": "X-Checksum",
}


@pytest.mark.parametrize("path", ["/chat/completions", "/embeddings"])
async def test_hop_by_hop_headers_are_not_forwarded(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, path: str
) -> None:
    async def chunked() -> AsyncIterator[bytes]:
        yield json.dumps(PROMPT).encode()  # Transfer-Encoding: chunked from the client

    headers = {**HOP_BY_HOP, "Content-Type": "application/json", "X-End-To-End": "kept", "Authorization": "Bearer sk-h"}
    async with http.post(celgate.url + path, data=chunked(), headers=headers) as response:
        assert response.status == 200
        assert response.request_info.headers["Transfer-Encoding"] == "chunked"
    received = {k.lower(): v for k, v in upstream.requests[0].headers.items()}
    for name in HOP_BY_HOP:
        if name != "Connection":
            assert name.lower() not in received, name
    assert "x-named-in-connection" not in received.get("connection", "").lower()
    assert "transfer-encoding" not in received  # celgate buffered the JSON and sent a length
    assert received["content-length"] == str(len(upstream.requests[0].raw))
    assert received["x-end-to-end"] == "kept"
    assert received["authorization"] == "Bearer sk-h"


async def test_hop_by_hop_response_headers_are_not_returned(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.push(
        Script(
            json={"ok": True},
            headers={
                "Connection": "X-Secret-Hop",
                "X-Secret-Hop": "1",
                "Proxy-Authenticate": "Basic",
                "X-End-To-End": "yes",
            },
        )
    )
    async with http.post(celgate.url + "/embeddings", json={"input": "x"}) as response:
        assert response.status == 200
        assert "X-Secret-Hop" not in response.headers
        assert "Proxy-Authenticate" not in response.headers
        assert response.headers["X-End-To-End"] == "yes"


@pytest.mark.parametrize("path", ["/chat/completions", "/embeddings"])
async def test_x_celgate_headers_never_reach_the_upstream(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, path: str
) -> None:
    decoy = FakeUpstream()
    await decoy.start()
    try:
        headers = {
            "x-celgate-agent": "SomeAgent",
            "x-celgate-internal": "guessed-token",
            "x-celgate-upstream": decoy.base_url,  # must not redirect the request without the gateway's token
            "X-Celgate-Debug": "1",
            "x-celgate-anything": "secret",
        }
        async with http.post(celgate.url + path, json=PROMPT, headers=headers) as response:
            assert response.status == 200
        assert decoy.requests == []
    finally:
        await decoy.close()
    names = {k.lower() for k in upstream.requests[0].headers}
    assert not [n for n in names if n.startswith("x-celgate")], names


# ------------------------------------------------------------------------ models, health, readiness


async def test_models_returns_the_upstream_list(
    celgate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory, http: aiohttp.ClientSession
) -> None:
    listing = {
        "object": "list",
        "data": [
            {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"},
            {"id": "o3-mini", "object": "model", "created": 1737146383, "owned_by": "system"},
        ],
    }
    upstream.push(Script(json=listing), Script(json=listing))
    models = [model async for model in oai(celgate.url).models.list()]
    assert [m.id for m in models] == ["gpt-4o", "o3-mini"]
    async with http.get(celgate.url + "/models") as response:
        assert await response.read() == json.dumps(listing).encode()
    assert [(r.method, r.path) for r in upstream.requests] == [("GET", "/v1/models")] * 2


async def test_models_error_passes_through(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    error = {
        "error": {
            "message": "Incorrect API key",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    upstream.push(Script(status=401, json=error))
    async with http.get(celgate.url + "/models") as response:
        assert response.status == 401
        assert await response.json() == error


async def test_healthz(celgate: Celgate, http: aiohttp.ClientSession) -> None:
    async with http.get(celgate.root + "/healthz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ok"


async def test_readyz_not_checked(celgate: Celgate, http: aiohttp.ClientSession) -> None:
    async with http.get(celgate.root + "/readyz") as response:
        body = await response.json()
        assert response.status == 200
    assert body["ready"] is True
    assert body["upstream"] == "not_checked"
    assert "no-policy" in body["policy"]["mode"]


async def test_readyz_upstream_unreachable_is_503(start_celgate: StartCelgate, http: aiohttp.ClientSession) -> None:
    celgate = await start_celgate(upstream=f"http://127.0.0.1:{free_port()}/v1", upstream_check=True)
    async with http.get(celgate.root + "/readyz") as response:
        assert response.status == 503
        body = await response.json()
    assert body["ready"] is False and body["upstream"] == "unreachable"


async def test_readyz_upstream_reachable(
    upstream: FakeUpstream, start_celgate: StartCelgate, http: aiohttp.ClientSession
) -> None:
    celgate = await start_celgate(upstream=upstream.base_url, upstream_check=True)
    async with http.get(celgate.root + "/readyz") as response:
        assert response.status == 200
        body = await response.json()
    assert body["ready"] is True and body["upstream"] == "reachable"


async def test_unknown_v1_path_goes_upstream_and_its_404_comes_back(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    error = {
        "error": {
            "message": "Invalid URL (GET /v1/nothing)",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    upstream.push(Script(status=404, json=error))
    async with http.get(celgate.url + "/nothing") as response:
        assert response.status == 404
        assert await response.json() == error


async def test_sse_event_passes_through_a_passthrough_route_untouched(
    celgate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    steps = [
        Step(sse({"id": "cmpl-1", "object": "text_completion", "choices": [{"text": "a", "index": 0}]})),
        Step(b"data: [DONE]\n\n"),
    ]
    upstream.push(Script(steps=steps))
    async with http.post(celgate.url + "/completions", json={"model": "m", "prompt": "p", "stream": True}) as response:
        assert await response.read() == b"".join(s.data for s in steps)


@pytest.mark.parametrize("path", ["/chat/completions", "/embeddings"])
async def test_expect_100_continue_is_answered_by_celgate_and_not_forwarded(
    celgate: Celgate, upstream: FakeUpstream, path: str
) -> None:
    """celgate reads the whole body before it asks the upstream, so the upstream must not be told to wait for one."""
    body = json.dumps(PROMPT).encode()
    host, port = celgate.url.split("//")[1].split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST /v1{path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode())
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 Continue")
    writer.write(body)
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    received = {k.lower() for k in upstream.requests[0].headers}
    assert "expect" not in received
