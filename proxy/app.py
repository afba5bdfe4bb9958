"""``create_app(settings)``: the one place the aiohttp application is built.

Lifecycle lives in ``cleanup_ctx`` entries, each setting up one resource and
tearing it down in reverse order: log writers, the demo model (with
``--upstream demo``), the upstream pool, the policy watcher, the drop-in
agent registry. The policy set is loaded here, synchronously, so a missing
or broken policy stops ``celgate serve`` before it listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from celgate.adapters import AgentRegistry, AgentSettings
from celgate.policy import PolicyStore, ReloadResult

from .accesslog import AccessLog, JsonLineWriter
from .admin import add_admin_routes, init_admin_state
from .agenthooks import GatewayHooksImpl
from .audit import AuditLog
from .auth import Authenticator
from .demo import MODEL as DEMO_MODEL, DemoServer
from .enforcement import Enforcer
from .keys import (
    ACCESS_LOG,
    AGENTS,
    AUTH,
    ENFORCER,
    GATEWAY_TOKEN,
    METRICS,
    POLICY_STORE,
    SETTINGS,
    UPSTREAM,
)
from .metrics import Metrics
from .frame import add_request_id_header, framed, not_found
from .routes import add_routes
from .settings import DEMO_UPSTREAM, Settings, SettingsError
from .upstream import Upstream

__all__ = ["create_app"]

log = logging.getLogger("celgate")


def create_app(settings: Settings) -> web.Application:
    """Build the app; raises ``SettingsError`` / ``PolicyLoadError`` on unusable config."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = metrics = Metrics()
    app[AUTH] = Authenticator(settings.upstream_api_key)
    app[GATEWAY_TOKEN] = secrets.token_urlsafe(24)
    store = _load_policy_store(settings, metrics)
    if store is not None:
        app[POLICY_STORE] = store
    init_admin_state(app)
    app.on_response_prepare.append(add_request_id_header)
    app.cleanup_ctx.extend([_writers, _upstream, _policy_watcher, _agents])
    add_admin_routes(app)
    add_routes(app)
    app.router.add_route("*", "/{tail:.*}", framed("unmatched")(not_found))
    return app


def _load_policy_store(settings: Settings, metrics: Metrics) -> PolicyStore | None:
    if settings.no_policy:
        if settings.sidecar_keys:
            raise SettingsError("sidecar-key mode needs a policy that declares principals (their keys)")
        return None
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


async def _writers(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    writers: list[JsonLineWriter] = []
    audit: AuditLog | None = None
    if settings.access_log:
        writers.append(JsonLineWriter(settings.access_log))
        app[ACCESS_LOG] = AccessLog(writers[-1])
    if settings.audit_log:
        writers.append(JsonLineWriter(settings.audit_log))
        audit = AuditLog(writers[-1], include_allows=settings.audit_allows, include_arguments=settings.audit_arguments)
    app[ENFORCER] = Enforcer(app.get(POLICY_STORE), app[METRICS], audit)
    for writer in writers:
        writer.start()
    yield
    for writer in writers:
        await writer.close()


async def _upstream(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    demo: DemoServer | None = None
    url = settings.upstream
    if url == DEMO_UPSTREAM:
        demo = DemoServer(settings.demo_delay_ms)
        url = await demo.start()
        log.info("demo model listening on %s", url)
    app[UPSTREAM] = upstream = Upstream(url, settings.timeouts)
    await upstream.start()
    yield
    await upstream.close()
    if demo is not None:
        await demo.close()


async def _policy_watcher(app: web.Application) -> AsyncIterator[None]:
    store = app.get(POLICY_STORE)
    task = _background(store.watch) if store is not None and app[SETTINGS].watch else None
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
        watch=settings.watch,
        gateway_url=_own_url(settings),
    )
    registry = AgentRegistry(agent_settings, GatewayHooksImpl(app[ENFORCER], app[METRICS]))
    await registry.start()
    app[AGENTS] = registry
    task = _background(registry.watch) if settings.watch else None
    yield
    await _stop(task)
    await registry.close()


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


