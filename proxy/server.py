"""Running the app: the one owner of aiohttp's runner, so every server celgate starts behaves alike.

Handler cancellation is on (a client that leaves cancels its handler, which
closes the upstream response at once) and aiohttp's own access log is off
(celgate writes its own). ``celgate serve`` and the tests both start servers
through ``Server``.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

__all__ = ["Server", "serve"]

log = logging.getLogger("celgate")
_SHUTDOWN_SECONDS = 5.0


class Server:
    """One listening app: ``await start()``, then ``url`` / ``port``; ``await stop()`` runs its cleanup."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self._host = host
        self._port = port
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                                     shutdown_timeout=_SHUTDOWN_SECONDS)

    async def start(self) -> None:
        await self._runner.setup()
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


def serve(app: web.Application, host: str, port: int, banner: str) -> None:
    """Run ``app`` until SIGINT or SIGTERM, on uvloop when available (~10 % less CPU per request).

    ``banner`` is logged with the listening URL once the port is bound; a port
    that cannot be bound raises ``OSError`` before anything is logged.
    """
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve_until_signalled(Server(app, host, port), banner))


async def _serve_until_signalled(server: Server, banner: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    log.info("%s listening on %s", banner, server.url)
    try:
        await stop.wait()
    finally:
        await server.stop()


def _loop_factory():  # type: ignore[no-untyped-def]
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop
