"""An https upstream: TLS with certificate verification (SNI, Host), keep-alive reuse, and a refusal of a bad cert."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from aiohttp import web

from tests.helpers import StartCelgate

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def make_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
async def tls_upstream(tmp_path: Path) -> AsyncIterator[tuple[str, Path, list[str]]]:
    cert, key = make_cert(tmp_path)
    hosts: list[str] = []

    async def chat(request: web.Request) -> web.Response:
        hosts.append(request.headers["Host"])
        return web.json_response(
            {
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "over tls"}, "finish_reason": "stop"}
                ],
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    yield f"https://localhost:{runner.addresses[0][1]}/v1", cert, hosts
    await runner.cleanup()


async def test_an_https_upstream_is_verified_and_reused(
    tls_upstream: tuple[str, Path, list[str]],
    start_celgate: StartCelgate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, cert, hosts = tls_upstream
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the system trust store, as OpenSSL reads it
    celgate = await start_celgate(upstream=url)
    client = openai.AsyncOpenAI(base_url=celgate.url, api_key="sk-test", max_retries=0)
    try:
        for _ in range(3):
            reply = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content == "over tls"
    finally:
        await client.close()
    assert hosts == [f"localhost:{url.split(':')[2].split('/')[0]}"] * 3


async def test_an_untrusted_upstream_certificate_is_a_502(
    tls_upstream: tuple[str, Path, list[str]],
    start_celgate: StartCelgate,
) -> None:
    url, _, hosts = tls_upstream
    celgate = await start_celgate(upstream=url)
    client = openai.AsyncOpenAI(base_url=celgate.url, api_key="sk-test", max_retries=0)
    try:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    finally:
        await client.close()
    assert caught.value.status_code == 502
    assert "certificate" in caught.value.message.lower()
    assert hosts == []
