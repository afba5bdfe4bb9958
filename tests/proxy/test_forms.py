"""Form uploads are read for ``model``: admission rules hold on audio, images and files too.

With policy active, a multipart or urlencoded body on a tool-free route is
read for its ``model`` field, and any other body is read as JSON whatever its
label. What policy cannot read unambiguously is a 400, and nothing goes
upstream. What it admits goes upstream byte for byte, framed by its length.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable

import aiohttp
import openai
import pytest
from multidict import CIMultiDict

from tests.helpers import Celgate, assert_openai_error
from tests.helpers.fakeupstream import FakeUpstream, Script

OpenAIFactory = Callable[..., openai.AsyncOpenAI]
POLICY = """\
version: 1
defaults: {decision: allow}
rules:
  - name: no-forbidden
    on: request
    models: ["forbidden*"]
    effect: deny
    reason: not this model
"""
B = "celgate-test-boundary-7d3f"
MULTIPART = f"multipart/form-data; boundary={B}"


def part(name: str, value: bytes | str, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    data = value.encode() if isinstance(value, str) else value
    return f'--{B}\r\nContent-Disposition: form-data; name="{name}"\r\n{extra}\r\n'.encode() + data + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{B}--\r\n".encode()


AUDIO = part("file", b"RIFF\x00\x01" * 20_000, "Content-Type: audio/wav").replace(  # over 64 KiB: read in a thread
    b'name="file"', b'name="file"; filename="a.wav"'
)


async def post(
    http: aiohttp.ClientSession, gate: Celgate, path: str, body: bytes, headers: dict[str, str] | CIMultiDict[str]
) -> tuple[int, bytes]:
    async with http.post(gate.url + path, data=body, headers=headers) as response:
        return response.status, await response.read()


async def test_the_openai_client_cannot_transcribe_or_edit_with_a_denied_model(
    gate: Celgate, upstream: FakeUpstream, oai: OpenAIFactory
) -> None:
    client = oai(gate.url)
    with pytest.raises(openai.PermissionDeniedError, match="not this model"):
        await client.audio.transcriptions.create(model="forbidden-whisper", file=("a.wav", b"RIFF" + b"\0" * 100))
    with pytest.raises(openai.PermissionDeniedError, match="not this model"):
        await client.images.edit(model="forbidden-image", image=("a.png", b"\x89PNG" + b"\0" * 100), prompt="x")
    assert upstream.requests == []
    upstream.push(Script(json={"text": "hello"}))
    result = await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"RIFF" + b"\0" * 100))
    assert result.text == "hello" and upstream.requests[0].path == "/v1/audio/transcriptions"


async def test_an_admitted_form_goes_upstream_byte_for_byte(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    body = form(part("model", "whisper-1"), AUDIO, part("language", "en"))
    upstream.push(Script(json={"text": "ok"}))
    assert (await post(http, gate, "/audio/transcriptions", body, {"Content-Type": MULTIPART}))[0] == 200
    [sent] = upstream.requests
    assert sent.raw == body and sent.headers["Content-Type"] == MULTIPART
    assert sent.headers["Content-Length"] == str(len(body))


@pytest.mark.parametrize(
    ("content_type", "body", "encoding"),
    [
        (MULTIPART, form(part("model", "forbidden-whisper"), AUDIO), None),
        (MULTIPART, form(AUDIO, part("model", "forbidden-whisper")), "gzip"),
        ("application/x-www-form-urlencoded", b"prompt=x&model=forbidden-image", None),
        ("application/octet-stream", json.dumps({"model": "forbidden-embed", "input": "x"}).encode(), None),
        ("image/png", b'  {"model": "forbidden-embed"}', None),
    ],
    ids=["multipart", "gzip-multipart", "urlencoded", "json-as-octet-stream", "json-as-image"],
)
async def test_a_denied_model_in_any_body_is_a_403(
    content_type: str, body: bytes, encoding: str | None,
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    headers = {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
        body = gzip.compress(body)
    status, answer = await post(http, gate, "/audio/transcriptions", body, headers)
    assert status == 403, answer
    assert "not this model" in assert_openai_error(json.loads(answer), type_="policy_denied")["message"]
    assert upstream.requests == []


SMUGGLED_LF = (  # a fake LF-only part and close delimiter inside a file; the real CRLF part follows
    part("file", f'x\n--{B}\nContent-Disposition: form-data; name="model"\n\nwhisper-1\n--{B}--\n', "X-A: 1")
    + part("model", "forbidden-whisper")
    + f"--{B}--\r\n".encode()
)
AMBIGUOUS = {
    "two models": form(part("model", "whisper-1"), part("model", "forbidden-whisper")),
    "a model in another case": form(part("model", "whisper-1"), part("Model", "forbidden-whisper")),
    "a padded model name": form(part("model ", "forbidden-whisper")),
    "a boundary inside a part": SMUGGLED_LF,
    "no close delimiter": part("model", "whisper-1") + AUDIO,
    "data after the close delimiter": form(part("model", "whisper-1")) + part("model", "forbidden-whisper"),
    "an RFC 2231 name": form(part("x", "forbidden-whisper").replace(b'name="x"', b"name*=utf-8''model")),
    "two names": form(part("x", "forbidden-whisper").replace(b'name="x"', b'name="x"; name="model"')),
    "an escaped name": form(part("x", "forbidden-whisper").replace(b'name="x"', b'name="mod\\el"')),
    "a folded disposition": form(part("x", "w").replace(b'form-data; name="x"', b'form-data;\r\n name="model"')),
    "two dispositions": form(part("x", "whisper-1", 'Content-Disposition: form-data; name="model"')),
    "model as a file": form(part("model", "whisper-1").replace(b'name="model"', b'name="model"; filename="m"')),
    "a base64 model": form(part("model", "Zm9yYmlkZGVu", "Content-Transfer-Encoding: base64")),
    "a UTF-16 model": form(part("model", "whisper-1".encode("utf-16"), "Content-Type: text/plain; charset=utf-16")),
    "a nested multipart": form(
        part("x", f"--in\r\n{part('model', 'forbidden')}--in--\r\n", "Content-Type: multipart/mixed; boundary=in")
    ),
    "not multipart at all": b"model=forbidden-whisper",
}


@pytest.mark.parametrize("body", list(AMBIGUOUS.values()), ids=list(AMBIGUOUS))
async def test_a_form_celgate_cannot_read_unambiguously_is_a_400(
    body: bytes, gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    status, answer = await post(http, gate, "/audio/transcriptions", body, {"Content-Type": MULTIPART})
    assert status == 400, answer
    assert_openai_error(json.loads(answer), type_="invalid_request_error", code="ambiguous_form")
    assert upstream.requests == []


@pytest.mark.parametrize(
    "body",
    [b"model=whisper-1&model=forbidden-whisper", b"model=whisper-1;model=forbidden", b"Model=forbidden", b"%ff=1"],
    ids=["twice", "semicolon", "case", "not-utf8"],
)
async def test_an_ambiguous_urlencoded_form_is_a_400(
    body: bytes, gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, answer = await post(http, gate, "/images/generations", body, headers)
    assert status == 400, answer
    assert_openai_error(json.loads(answer), code="ambiguous_form")
    assert upstream.requests == []


async def test_two_boundaries_are_a_400(gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession) -> None:
    """A form under the second boundary hides inside a part of the first: parsers differ in which they take."""
    inner = '--other\r\nContent-Disposition: form-data; name="model"\r\n\r\nforbidden-whisper\r\n--other--\r\n'
    body = form(part("model", "whisper-1"), part("file", inner))
    status, answer = await post(
        http, gate, "/audio/transcriptions", body, {"Content-Type": f"{MULTIPART}; boundary=other"}
    )
    assert status == 400 and upstream.requests == []
    assert_openai_error(json.loads(answer), code="ambiguous_form")


async def test_two_content_types_are_a_400(gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession) -> None:
    """Two boundaries: the upstream could read another form (aiohttp's parser refuses the request)."""
    headers = CIMultiDict([("Content-Type", MULTIPART), ("Content-Type", "multipart/form-data; boundary=other")])
    status, answer = await post(http, gate, "/audio/transcriptions", form(part("model", "whisper-1")), headers)
    assert status == 400 and upstream.requests == []
    assert_openai_error(json.loads(answer), type_="invalid_request_error")
