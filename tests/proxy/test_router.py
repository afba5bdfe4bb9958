"""Every route celgate registers runs inside the request guard (OpenAI-shaped errors, accounting)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web

from celgate.proxy import create_app
from celgate.proxy.router import GUARDED, add_route
from celgate.proxy.settings import Settings
from tests.helpers import Celgate, assert_openai_error


def test_every_registered_route_is_guarded() -> None:
    app = create_app(Settings(no_policy=True, agents=Path("/nonexistent"), upstream_check=False))
    routes = list(app.router.routes())
    assert routes
    unguarded = [
        (r.method, r.resource.canonical if r.resource else "?")
        for r in routes
        if not getattr(r.handler, GUARDED, False)
    ]
    assert unguarded == []


async def test_a_new_route_gets_openai_errors_and_accounting(http: aiohttp.ClientSession) -> None:
    """A handler that crashes through add_route answers a JSON 500 and is counted, never aiohttp's text 500."""
    app = create_app(Settings(no_policy=True, agents=Path("/nonexistent"), upstream_check=False))

    async def broken(request: web.Request) -> web.StreamResponse:
        raise RuntimeError("boom")

    add_route(app, "GET", "/v1/broken-for-test", broken)
    app.router._resources.insert(0, app.router._resources.pop())  # ahead of the /v1 catch-all
    running = await Celgate.start(app)
    try:
        async with http.get(running.root + "/v1/broken-for-test") as response:
            assert response.status == 500
            assert_openai_error(await response.json(), code="internal_error")
            assert response.headers["x-request-id"].startswith("req_")
        async with http.get(running.root + "/metrics") as response:
            text = await response.text()
        assert 'route="/v1/broken-for-test"' in text and 'status="500"' in text
    finally:
        await running.stop()
