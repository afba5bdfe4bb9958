"""Every typed key of the app's and requests' state, in one place."""

from __future__ import annotations

from aiohttp import web

from celgate.adapters import AgentRegistry
from celgate.policy import PolicyStore

from .accesslog import AccessLog
from .auth import Authenticator
from .enforcement import Enforcer
from .exchange import Exchange
from .metrics import Metrics
from .settings import Settings
from .upstream import Upstream

__all__ = [
    "ACCESS_LOG",
    "AGENTS",
    "AUTH",
    "ENFORCER",
    "EXCHANGE",
    "GATEWAY_TOKEN",
    "METRICS",
    "POLICY_STORE",
    "SETTINGS",
    "UPSTREAM",
]

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
UPSTREAM = web.AppKey("upstream", Upstream)
AUTH = web.AppKey("auth", Authenticator)
POLICY_STORE = web.AppKey("policy_store", PolicyStore)
ENFORCER = web.AppKey("enforcer", Enforcer)
AGENTS = web.AppKey("agents", AgentRegistry)
ACCESS_LOG = web.AppKey("access_log", AccessLog)
GATEWAY_TOKEN = web.AppKey("gateway_token", str)  # authenticates celgate's own loopback calls
EXCHANGE = web.RequestKey("exchange", Exchange)
