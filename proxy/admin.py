"""Health, readiness, metrics, admin views of the app's state, and ``POST /admin/reload``.

``/healthz`` and ``/readyz`` are always open (probes carry no credentials and
learn nothing secret). ``/metrics`` and ``/admin/*`` show the policy, agents'
errors and traffic figures: with ``--admin-token-env`` they answer only
``Authorization: Bearer <admin token>`` (others get a 401), and celgate
refuses to listen off loopback without one. The policy and agent views pass
every string through ``redact``: their errors quote exception messages, which
can hold connection strings and keys (metric labels are redacted where they
are made, in ``metrics``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import Unauthorized
from .keys import AGENTS, ENFORCER, METRICS, SETTINGS, UPSTREAM
from .metrics import CONTENT_TYPE_LATEST
from .redaction import redact_json
from .reload import reload_on_request
from .router import add_route
from .settings import Secret

__all__ = ["add_admin_routes"]

_PROBE_CACHE_SECONDS = 2.0
_PROBE = web.AppKey("upstream_probe_cache", dict)


def add_admin_routes(app: web.Application) -> None:
    app[_PROBE] = {}
    add_route(app, "GET", "/healthz", healthz)
    add_route(app, "GET", "/readyz", readyz)
    for path, handler in (
        ("/metrics", metrics),
        ("/admin/metrics", admin_metrics),
        ("/admin/policies", admin_policies),
        ("/admin/agents", admin_agents),
        ("/admin/agents/errors", admin_agent_errors),
        ("/admin/tools", admin_tools),
        ("/admin/tools/errors", admin_tool_errors),
    ):
        add_route(app, "GET", path, _admin_only(handler))
    add_route(app, "POST", "/admin/reload", _admin_only(admin_reload))


def _admin_only(handler: Handler) -> Handler:
    """``handler`` behind the admin token, when one is set."""

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.StreamResponse:
        token = request.app[SETTINGS].admin_token
        if token is not None and not _bears(request, token):
            refused = Unauthorized(
                "celgate: this endpoint needs Authorization: Bearer <admin token>", code="invalid_admin_token"
            )
            refused.headers = {"WWW-Authenticate": 'Bearer realm="celgate admin"'}
            raise refused
        return await handler(request)

    return checked


def _bears(request: web.Request, token: Secret) -> bool:
    """Whether the request's bearer token is ``token``; hashed first, so the comparison leaks not even its length."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(_digest(presented.strip()), _digest(token.value))


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


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
    state: str = cache["state"]
    return state


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response


async def admin_metrics(request: web.Request) -> web.Response:
    return web.json_response(request.app[METRICS].as_json())


async def admin_policies(request: web.Request) -> web.Response:
    return _redacted_json(request.app[ENFORCER].source.status())


async def admin_agents(request: web.Request) -> web.Response:
    registry = request.app.get(AGENTS)
    return _redacted_json({"agents": registry.agents() if registry else []})


async def admin_agent_errors(request: web.Request) -> web.Response:
    registry = request.app.get(AGENTS)
    return _redacted_json({"errors": [failure.as_json() for failure in registry.failures()] if registry else []})


async def admin_tools(request: web.Request) -> web.Response:
    registry = request.app.get(AGENTS)
    return _redacted_json({"tools": registry.tools() if registry else []})


async def admin_tool_errors(request: web.Request) -> web.Response:
    registry = request.app.get(AGENTS)
    return _redacted_json({"errors": [failure.as_json() for failure in registry.tool_failures()] if registry else []})


async def admin_reload(request: web.Request) -> web.Response:
    """Reload policies, agents and gateway tools now, as SIGHUP does; the answer says what is active afterwards."""
    return _redacted_json(await reload_on_request(request.app))


def _redacted_json(body: dict[str, Any]) -> web.Response:
    return web.json_response(redact_json(body))
