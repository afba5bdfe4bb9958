"""``create_app(settings)``: the one place the aiohttp application is built.

Everything a request needs is built here, synchronously: settings, metrics,
auth, the policy source (loaded now, so a missing or broken policy stops
``celgate serve`` before it listens) and the enforcer. Resources with a
lifetime each get their own ``cleanup_ctx`` entry, set up in order and torn
down in reverse, so one that fails to start never leaks the ones before it:
the secrets ``redact`` masks, the access log, the audit log, the demo model
(``--upstream demo``), the upstream pool, the policy watcher, the drop-in
agent registry, the event-loop lag sampler. A listener off loopback without
an admin token is refused. A worker of ``--workers N`` gets its ``Worker``
(the gateway token its siblings share, the directory of their metrics) and
a watch that stops it if its supervisor dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from celgate.adapters import AgentRegistry, AgentSettings
from celgate.policy import ANONYMOUS, PolicyStore, ReloadResult

from .accesslog import AccessLog, JsonLineWriter
from .admin import add_admin_routes
from .audit import AuditLog
from .auth import Authenticator
from .demo import MODEL as DEMO_MODEL
from .demo import DemoServer
from .dropins import PolicyGatewayHooks
from .enforcement import Enforcer, NoPolicy
from .keys import (
    ACCESS_LOG,
    AGENTS,
    AUTH,
    ENFORCER,
    GATEWAY_TOKEN,
    LIFECYCLE,
    LIMITS,
    METRICS,
    SETTINGS,
    UPSTREAM,
    WORKER,
)
from .lifecycle import Lifecycle, Worker, stop_when_orphaned
from .limits import Limits
from .looplag import sample_loop_lag
from .metrics import Metrics
from .redaction import holding_secrets
from .router import add_catch_all
from .routes import add_routes
from .settings import DEMO_UPSTREAM, Settings, SettingsError, check_listener
from .upstream import Upstream, UpstreamLimits

__all__ = ["create_app"]

log = logging.getLogger("celgate")
_DEMO_URL = web.AppKey("demo_url", str)
_AUDIT_WRITER = web.AppKey("audit_writer", JsonLineWriter)


def create_app(settings: Settings, worker: Worker | None = None) -> web.Application:
    """Build the app; raises ``SettingsError`` / ``PolicyLoadError`` on unusable config."""
    check_listener(settings)
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = metrics = Metrics(worker.metrics_dir if worker is not None else None)
    app[AUTH] = Authenticator(settings.upstream_api_key)
    app[GATEWAY_TOKEN] = worker.gateway_token if worker is not None else secrets.token_urlsafe(24)
    if worker is not None:
        app[WORKER] = worker
    app[LIFECYCLE] = Lifecycle()
    app[LIMITS] = Limits(settings.max_concurrent_requests, settings.max_concurrent_streams)
    audit = None
    if settings.audit_log:
        app[_AUDIT_WRITER] = writer = JsonLineWriter(settings.audit_log)
        audit = AuditLog(writer, include_allows=settings.audit_allows, include_arguments=settings.audit_arguments)
    if settings.access_log:
        app[ACCESS_LOG] = AccessLog(JsonLineWriter(settings.access_log))
    app[ENFORCER] = Enforcer(_policy_source(settings, metrics), metrics, audit, settings.max_held_call_bytes)
    app.cleanup_ctx.extend(
        [_redaction, _access_log, _audit_log, _demo_model, _upstream, _policy_watcher, _agents, _loop_lag]
    )
    if worker is not None:
        app.cleanup_ctx.append(_supervisor_watch)
    add_admin_routes(app)
    add_routes(app)
    add_catch_all(app)
    return app


def _policy_source(settings: Settings, metrics: Metrics) -> PolicyStore | NoPolicy:
    if settings.no_policy:
        if settings.sidecar_keys:
            raise SettingsError("sidecar-key mode needs a policy that declares principals (their keys)")
        return NoPolicy()
    if not settings.policies.is_dir():
        raise SettingsError(
            f"policy directory {settings.policies} does not exist; create it or pass --no-policy to allow everything"
        )

    def on_reload(result: ReloadResult) -> None:
        metrics.policy_reloads.labels("ok" if result.ok else "error").inc()
        if result.ok:
            metrics.set_policy_version(result.policy.version)
            log.info("policy reloaded: version %s, %d rules", result.policy.version, result.policy.rule_count)
        else:
            log.error("policy reload failed; keeping version %s:\n%s", result.policy.version, result.error)

    store = PolicyStore(settings.policies, backend=settings.cel_backend, on_reload=on_reload)
    metrics.set_policy_version(store.current.version)
    return store


async def _redaction(app: web.Application) -> AsyncIterator[None]:
    """From start-up to shutdown, ``redact`` masks this app's secrets and its policy's principal keys."""
    settings, enforcer = app[SETTINGS], app[ENFORCER]
    held = [secret.value for secret in (settings.upstream_api_key, settings.admin_token) if secret is not None]

    def is_principal_key(token: str) -> bool:
        return enforcer.policy().resolve_principal(token) is not ANONYMOUS

    with holding_secrets([*held, app[GATEWAY_TOKEN]], is_principal_key):
        yield


def _writer_lifetime(
    writer_of: Callable[[web.Application], JsonLineWriter | None],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup_ctx entry of one log writer: opened at start-up, flushed and closed at shutdown."""

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        writer = writer_of(app)
        if writer is not None:
            writer.start()
        yield
        if writer is not None:
            await writer.close()

    return lifetime


_access_log = _writer_lifetime(lambda app: access.writer if (access := app.get(ACCESS_LOG)) is not None else None)
_audit_log = _writer_lifetime(lambda app: app.get(_AUDIT_WRITER))


async def _demo_model(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if settings.upstream != DEMO_UPSTREAM:
        yield
        return
    demo = DemoServer(settings.demo_delay_ms)
    app[_DEMO_URL] = await demo.start()
    log.info("demo model listening on %s", app[_DEMO_URL])
    yield
    await demo.close()


async def _upstream(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[UPSTREAM] = upstream = Upstream(
        app.get(_DEMO_URL) or settings.upstream,
        settings.timeouts,
        UpstreamLimits(settings.max_upstream_body_bytes, settings.max_upstream_event_bytes),
    )
    await upstream.start()
    yield
    await upstream.close()


async def _policy_watcher(app: web.Application) -> AsyncIterator[None]:
    task = _background(app[ENFORCER].source.watch) if app[SETTINGS].watch else None
    yield
    await _stop(task)


async def _agents(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if not settings.agents.is_dir():
        yield
        return
    agent_settings = AgentSettings(
        directory=settings.agents,
        default_model=settings.agents_model or (DEMO_MODEL if settings.upstream == DEMO_UPSTREAM else None),
        max_turns=settings.agents_max_turns,
        api=settings.agents_api,
        watch=settings.watch,
        gateway_url=_own_url(settings),
        tools=settings.tools,
    )
    registry = AgentRegistry(agent_settings, PolicyGatewayHooks(app[ENFORCER], app[METRICS]))
    await registry.start()
    app[AGENTS] = registry
    task = _background(registry.watch) if settings.watch else None
    yield
    await _stop(task)
    await registry.close()


async def _loop_lag(app: web.Application) -> AsyncIterator[None]:
    task = _background(lambda: sample_loop_lag(app[METRICS].loop_lag.observe))
    yield
    await _stop(task)


async def _supervisor_watch(app: web.Application) -> AsyncIterator[None]:
    task = _background(lambda: stop_when_orphaned(app[WORKER]))
    yield
    await _stop(task)


def _own_url(settings: Settings) -> str | None:
    """celgate's /v1 URL for exports' import-time clients; unknown with an ephemeral port."""
    if settings.port == 0:
        return None
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.port}/v1"


def _background(run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
    async def guarded() -> None:
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background watcher stopped")

    return asyncio.get_running_loop().create_task(guarded())


async def _stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
