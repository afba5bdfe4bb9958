"""Health, readiness, metrics and read-only admin views of the app's state."""

from __future__ import annotations

import time

from aiohttp import web

from .keys import AGENTS, ENFORCER, METRICS, SETTINGS, UPSTREAM
from .metrics import CONTENT_TYPE_LATEST
from .router import add_route

__all__ = ["add_admin_routes"]

_PROBE_CACHE_SECONDS = 2.0
_PROBE = web.AppKey("upstream_probe_cache", dict)


def add_admin_routes(app: web.Application) -> None:
    app[_PROBE] = {}
    for path, handler in (
        ("/healthz", healthz),
        ("/readyz", readyz),
        ("/metrics", metrics),
        ("/admin/metrics", admin_metrics),
        ("/admin/policies", admin_policies),
        ("/admin/agents", admin_agents),
        ("/admin/agents/errors", admin_agent_errors),
    ):
        add_route(app, "GET", path, handler)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when a policy set is active (or --no-policy) and the upstream accepts connections."""
    policy = request.app[ENFORCER].readiness()
    upstream = await _upstream_state(request)
    ready = upstream != "unreachable"
    body = {"ready": ready, "policy": policy, "upstream": upstream}
    return web.json_response(body, status=200 if ready else 503)


async def _upstream_state(request: web.Request) -> str:
    app = request.app
    if not app[SETTINGS].upstream_check:
        return "not_checked"
    cache = app[_PROBE]
    now = time.monotonic()
    if now - cache.get("at", -1e9) > _PROBE_CACHE_SECONDS:
        cache["state"] = "reachable" if await app[UPSTREAM].probe() else "unreachable"
        cache["at"] = now
    return cache["state"]


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response


async def admin_metrics(request: web.Request) -> web.Response:
    return web.json_response(request.app[METRICS].as_json())


async def admin_policies(request: web.Request) -> web.Response:
    return web.json_response(request.app[ENFORCER].source.status())


async def admin_agents(request: web.Request) -> web.Response:
    registry = request.app.get(AGENTS)
    return web.json_response({"agents": registry.agents() if registry else []})


async def admin_agent_errors(request: web.Request) -> web.Response:
    registry = request.app.get(AGENTS)
    return web.json_response({"errors": [failure.as_json() for failure in registry.failures()] if registry else []})

