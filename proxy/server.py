"""Running the app: the one owner of aiohttp's runner, so every server celgate starts behaves alike.

Handler cancellation is on (a client that leaves cancels its handler, which
closes the upstream response at once) and aiohttp's own access log is off
(celgate writes its own). Each request head must arrive within
``head_timeout`` seconds of the connection opening or of the previous
response (slowloris); aiohttp caps header count and size (128 headers,
8190 bytes a line), and errors it raises before routing are OpenAI-shaped
too. ``celgate serve`` and the tests both start servers through ``Server``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .errors import error_body
from .jsontext import compact_json
from .keys import LIFECYCLE, SETTINGS
from .reload import reload_everything

__all__ = ["Server", "serve"]

log = logging.getLogger("celgate")
_SHUTDOWN_SECONDS = 5.0
_IDLE_KEEPALIVE_SECONDS = 75.0  # as nginx: a kept-alive connection with nothing to do is closed
DEFAULT_HEAD_TIMEOUT = 30.0
_EARLY = 0.001  # a timer may fire this much before its time (the loop's clock resolution)


class _GuardedHandler(RequestHandler):
    """aiohttp's request handler with a deadline on every request head, and OpenAI-shaped parse errors.

    One timer per connection, re-armed lazily as aiohttp's own keep-alive
    timer is: a request moves the deadline (two float stores), and the timer,
    when it fires early, sleeps again until the current deadline. A timer per
    request (schedule, cancel) costs more than the rest of this class.
    """

    head_timeout = DEFAULT_HEAD_TIMEOUT

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_deadline: float | None = None  # None: no head is awaited (a request is being handled)
        self._heads = 0
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._request_count != self._heads:  # a request head is complete
            self._heads = self._request_count
            self._head_deadline = None

    def log_access(self, request: BaseRequest, response: web.StreamResponse, time: float | None) -> None:
        super().log_access(request, response, time)
        self._arm()  # a response finished: the next head has its own deadline

    def connection_lost(self, exc: BaseException | None) -> None:
        self._head_deadline = None
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """What aiohttp answers for a request it could not parse, in the OpenAI error shape."""
        response = super().handle_error(request, status, exc, message)
        reason = getattr(exc, "message", None) or response.reason
        body = error_body(f"celgate: {reason}", "invalid_request_error", "bad_request" if status < 500 else None)
        return web.Response(
            status=response.status,
            text=compact_json(body),
            content_type="application/json",
            headers={"Connection": "close"},
        )

    def _arm(self) -> None:
        if self.transport is None:
            return  # the connection is gone
        self._head_deadline = deadline = self._loop.time() + self.head_timeout
        if self._head_timer is None:
            self._head_timer = self._loop.call_at(deadline, self._head_check)

    def _head_check(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if deadline is None:
            return  # a request is in hand; the next _arm starts a timer
        if self._loop.time() < deadline - _EARLY:
            self._head_timer = self._loop.call_at(deadline, self._head_check)
        elif self._request_count == self._heads:
            self.force_close()


class _GuardedServer(web.Server):
    """``web.Server`` building ``_GuardedHandler``s (same state: only the factory differs)."""

    head_timeout = DEFAULT_HEAD_TIMEOUT

    def __call__(self) -> RequestHandler:
        handler = _GuardedHandler(self, loop=self._loop, **self._kwargs)
        handler.head_timeout = self.head_timeout
        return handler


class _Runner(web.AppRunner):
    """aiohttp's runner with guarded handlers, and a drain between closing the listener and cancelling handlers."""

    def __init__(self, app: web.Application, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._head_timeout = head_timeout

    async def shutdown(self) -> None:
        await self.app[LIFECYCLE].drain(self.app[SETTINGS].drain_seconds)
        await super().shutdown()

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _GuardedServer  # the app's own Server, made to build guarded handlers
        assert isinstance(server, _GuardedServer)
        server.head_timeout = self._head_timeout
        return server


class Server:
    """One listening app: ``await start()``, then ``url`` / ``port``; ``await stop()`` runs its cleanup.

    With ``sock`` it serves that listening socket (a worker's, shared with its
    siblings) instead of binding ``host``:``port``.
    """

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        head_timeout: float = DEFAULT_HEAD_TIMEOUT,
        sock: socket.socket | None = None,
    ) -> None:
        self.app = app
        self._host = host
        self._port = port
        self._sock = sock
        self._runner = _Runner(
            app,
            head_timeout,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=_SHUTDOWN_SECONDS,
            keepalive_timeout=_IDLE_KEEPALIVE_SECONDS,
        )

    async def start(self) -> None:
        await self._runner.setup()
        site: web.BaseSite
        if self._sock is not None:
            site = web.SockSite(self._runner, self._sock)
        else:
            site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()

    @property
    def port(self) -> int:
        return int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        """The root URL it listens on (``http://host:port``)."""
        host = self._runner.addresses[0][0]
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def stop(self) -> None:
        await self._runner.cleanup()


def serve(
    app: web.Application,
    host: str,
    port: int,
    banner: str,
    head_timeout: float = DEFAULT_HEAD_TIMEOUT,
    sock: socket.socket | None = None,
) -> None:
    """Run ``app`` until SIGINT or SIGTERM, on uvloop when available (~10 % less CPU per request).

    ``banner`` is logged with the listening URL once the port is bound; a port
    that cannot be bound raises ``OSError`` before anything is logged. A
    worker passes the listening ``sock`` it shares.
    """
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve_until_signalled(Server(app, host, port, head_timeout, sock), banner))


async def _serve_until_signalled(server: Server, banner: str) -> None:
    """Serve until SIGINT/SIGTERM (then drain: not ready at once, in-flight work gets ``--drain-seconds``).

    SIGHUP reloads policies and agents, as ``POST /admin/reload`` does.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[Any]] = set()
    loop.add_signal_handler(signal.SIGHUP, lambda: _spawn(reloads, reload_everything(server.app)))
    await server.start()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})  # a worker starts with it blocked: see workers.py
    log.info("%s listening on %s", banner, server.url)
    try:
        await stop.wait()
        server.app[LIFECYCLE].draining = True  # /readyz says no before the listener even closes
        log.info("stopping: draining in-flight requests")
    finally:
        await server.stop()


def _spawn(tasks: set[asyncio.Task[Any]], work: Coroutine[Any, Any, Any]) -> None:
    task = asyncio.get_running_loop().create_task(work)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop
