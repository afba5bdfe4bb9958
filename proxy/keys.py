"""Every typed key of the app's and requests' state, in one place."""

from __future__ import annotations

from aiohttp import web

from celgate.adapters import AgentRegistry
from celgate.policy import RouteMatch

from .accesslog import AccessLog
from .auth import Authenticator
from .enforcement import Enforcer
from .lifecycle import Lifecycle, Worker
from .limits import Limits
from .metrics import Metrics
from .record import RequestRecord
from .settings import Settings
from .upstream import Upstream

__all__ = [
    "ACCESS_LOG",
    "AGENTS",
    "AUTH",
    "ENFORCER",
    "GATEWAY_TOKEN",
    "LIFECYCLE",
    "LIMITS",
    "METRICS",
    "RECORD",
    "ROUTE_MATCH",
    "SETTINGS",
    "UPSTREAM",
    "WORKER",
]

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
UPSTREAM = web.AppKey("upstream", Upstream)
AUTH = web.AppKey("auth", Authenticator)
ENFORCER = web.AppKey("enforcer", Enforcer)
AGENTS = web.AppKey("agents", AgentRegistry)
ACCESS_LOG = web.AppKey("access_log", AccessLog)
GATEWAY_TOKEN = web.AppKey("gateway_token", str)  # authenticates celgate's own loopback calls
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
LIMITS = web.AppKey("limits", Limits)
RECORD = web.RequestKey("record", RequestRecord)
ROUTE_MATCH = web.RequestKey("route_match", RouteMatch)
WORKER = web.AppKey("worker", Worker)  # set only in a worker of celgate serve --workers N
