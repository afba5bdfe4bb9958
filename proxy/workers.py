"""``celgate serve --workers N``: a supervisor and N worker processes on one listening socket.

The supervisor binds the port once (so a port in use fails once, before any
worker starts, and port 0 resolves to one port) and hands that socket to each
worker: pre-fork on one socket, not a socket per worker with SO_REUSEPORT.
SO_REUSEPORT would let any process of the same user join the port and take a
share of the connections, a stale celgate or another container in the pod
included; one socket bound without it keeps the port exclusive.

Workers are spawned (a fresh interpreter each, never forked from the
supervisor), so none inherits threads, locks or prometheus-client's value
class from it: ``PROMETHEUS_MULTIPROC_DIR`` is set before the worker imports
anything, and every worker writes its metrics there. Each worker is a whole
celgate: its own policy store, agent registry, watchers, pool, limits and
drain. They share the gateway token (a drop-in's loopback call may land on any
worker) and the metrics directory.

The supervisor replaces a worker that dies and counts it in
``celgate_worker_restarts_total``: at once if it had served for
``_STABLE_SECONDS``, otherwise after a delay that doubles with each young
death in a row (1, 2, 4 ... 30 s), so a worker that cannot start does not spin. SIGHUP goes to every
worker (each reloads; one still starting has SIGHUP blocked, and reloads
once it serves); SIGTERM or SIGINT drains them all (each has
``--drain-seconds``), removes the metrics directory and exits 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

from .lifecycle import Worker
from .metrics import RESTARTS_FILE
from .settings import Settings

__all__ = ["supervise"]

log = logging.getLogger("celgate")
_RESPAWN_SECONDS = 1.0  # the first replacement of a worker that died young; doubled per quick death in a row
_MAX_RESPAWN_SECONDS = 30.0  # a crash-looping worker is retried at least this often
_STABLE_SECONDS = 10.0  # a worker that served this long died of something else: replace it at once
_STOP_GRACE_SECONDS = 15.0  # past --drain-seconds: a worker's cancel grace and cleanup
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def supervise(settings: Settings, banner: str) -> int:
    """Run ``settings.workers`` workers on one socket until SIGTERM/SIGINT; raises ``OSError`` if it cannot bind."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    listener = socket.create_server((settings.host, settings.port), family=family, backlog=1024)
    settings = dataclasses.replace(settings, port=listener.getsockname()[1])
    with listener, tempfile.TemporaryDirectory(prefix="celgate-metrics-") as directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory  # spawned workers inherit it before any import
        supervisor = _Supervisor(settings, listener, Path(directory))
        log.info("%s: %d workers on %s:%d", banner, settings.workers, settings.host, settings.port)
        return supervisor.run(banner)


class _Supervisor:
    def __init__(self, settings: Settings, listener: socket.socket, metrics_dir: Path) -> None:
        self._settings = settings
        self._listener = listener
        self._metrics_dir = metrics_dir
        self._token = secrets.token_urlsafe(24)
        self._spawn_context = multiprocessing.get_context("spawn")
        self._workers: dict[int, BaseProcess] = {}
        self._started_at: dict[int, float] = {}
        self._respawn_at: dict[int, float] = {}
        self._quick_deaths: dict[int, int] = {}  # per slot: deaths in a row, each within _STABLE_SECONDS of a start
        self._restarts = 0
        self._write_restarts()

    def run(self, banner: str) -> int:
        with _signals_to_pipe() as signals:
            for index in range(self._settings.workers):
                self._spawn(index, banner)
            while True:
                wait([signals, *(p.sentinel for p in self._workers.values())], timeout=self._next_respawn_in())
                for signum in _read_signals(signals):
                    if signum == signal.SIGHUP:
                        log.info("SIGHUP: every worker reloads")
                        self._signal_all(signal.SIGHUP)
                    else:
                        return self._stop()
                self._reap()
                self._respawn_due(banner)

    def _spawn(self, index: int, banner: str) -> None:
        """Start worker ``index`` with SIGHUP blocked: a reload asked while it starts waits until it serves.

        (Unblocked, SIGHUP's default action would kill a worker still importing.)
        """
        worker = Worker(index, os.getpid(), self._token, self._metrics_dir)
        process = self._spawn_context.Process(
            target=_run_worker,
            args=(self._settings, self._listener, worker, banner),
            name=f"celgate-worker-{index}",
        )
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})  # the child inherits the mask
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        self._workers[index] = process
        self._started_at[index] = time.monotonic()

    def _reap(self) -> None:
        """Forget workers that exited, count them, and schedule their replacements."""
        for index, process in list(self._workers.items()):
            if process.exitcode is None:
                continue
            del self._workers[index]
            pid, exitcode = process.pid, process.exitcode
            assert pid is not None
            process.close()  # its sentinel pipe: a supervisor replacing workers for weeks must not leak fds
            mark_process_dead(pid, str(self._metrics_dir))  # type: ignore[no-untyped-call]
            self._restarts += 1
            self._write_restarts()
            self._respawn_at[index] = time.monotonic() + self._respawn_delay(index)
            log.error("worker %d (pid %d) exited with %s; replacing it", index, pid, exitcode)

    def _respawn_delay(self, index: int) -> float:
        """0 s for a worker that had served a while; 1, 2, 4 ... 30 s for one that keeps dying young.

        A worker that cannot start (a bad agent import, no memory) must not be respawned in a storm
        that starves the live workers of the CPU they share.
        """
        lived = time.monotonic() - self._started_at[index]
        if lived >= _STABLE_SECONDS:
            self._quick_deaths[index] = 0
            return 0.0
        deaths = self._quick_deaths[index] = self._quick_deaths.get(index, 0) + 1
        return min(_MAX_RESPAWN_SECONDS, _RESPAWN_SECONDS * 2.0 ** min(deaths - 1, 16))  # 16: no overflow

    def _respawn_due(self, banner: str) -> None:
        now = time.monotonic()
        for index, at in list(self._respawn_at.items()):
            if at <= now:
                del self._respawn_at[index]
                self._spawn(index, banner)

    def _next_respawn_in(self) -> float | None:
        if not self._respawn_at:
            return None
        return max(0.0, min(self._respawn_at.values()) - time.monotonic())

    def _signal_all(self, signum: int) -> None:
        for process in self._workers.values():
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    def _stop(self) -> int:
        """Drain every worker (each has ``--drain-seconds``); kill what outlives the grace."""
        log.info("stopping: draining %d workers", len(self._workers))
        self._listener.close()  # once the workers close theirs too, new connections are refused, not queued
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self._settings.drain_seconds + _STOP_GRACE_SECONDS
        for process in self._workers.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.error("worker pid %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join()
        return 0

    def _write_restarts(self) -> None:
        """Replace the count atomically: a scrape reads the old number or the new one, never half a file."""
        partial = self._metrics_dir / f".{RESTARTS_FILE}"
        partial.write_text(str(self._restarts))
        partial.replace(self._metrics_dir / RESTARTS_FILE)


@contextlib.contextmanager
def _signals_to_pipe() -> Iterator[int]:
    """The supervisor's signals as bytes on a pipe (``signal.set_wakeup_fd``), so one ``wait`` sees them too."""
    readable, writable = os.pipe()
    os.set_blocking(readable, False)
    os.set_blocking(writable, False)
    previous = {signum: signal.signal(signum, lambda *_: None) for signum in _SIGNALS}
    previous_fd = signal.set_wakeup_fd(writable)
    try:
        yield readable
    finally:
        signal.set_wakeup_fd(previous_fd)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        os.close(readable)
        os.close(writable)


def _read_signals(readable: int) -> bytes:
    with contextlib.suppress(BlockingIOError):
        return os.read(readable, 512)
    return b""


def _run_worker(settings: Settings, listener: socket.socket, worker: Worker, banner: str) -> None:
    """A worker's whole life: build its own app and serve the shared socket until told to stop."""
    from celgate.policy import PolicyLoadError

    from .accesslog import configure_logging
    from .app import create_app
    from .redaction import redact
    from .server import serve
    from .settings import SettingsError

    configure_logging(settings.log_level, settings.log_format)
    try:
        app = create_app(settings, worker)
    except (SettingsError, PolicyLoadError) as exc:
        log.error("%s", redact(f"worker {worker.index} cannot start: {exc}"))
        sys.exit(1)
    serve(
        app,
        settings.host,
        settings.port,
        banner=f"{banner} worker {worker.index} (pid {os.getpid()})",
        head_timeout=settings.client_timeout,
        sock=listener,
    )
