"""The process lifecycle: requests in flight, draining on SIGTERM, and reloading on SIGHUP.

On SIGTERM celgate stops accepting connections and reports not ready at
once; requests already in flight get ``--drain-seconds`` to finish; streams
still open then end with an SSE ``error`` event (``shutting_down``, no
``[DONE]``) and every other handler is cancelled; the process exits 0.

Under ``--workers N`` each worker process has its own ``Lifecycle`` and knows
its supervisor through ``Worker``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DRAIN", "Lifecycle", "Worker", "is_drain", "stop_when_orphaned"]

log = logging.getLogger("celgate")
DRAIN = "celgate: draining"  # the cancel message a drain uses, so a stream can tell it from a client leaving
_CANCEL_GRACE_SECONDS = 2.0


def is_drain(exc: asyncio.CancelledError) -> bool:
    return bool(exc.args) and exc.args[0] == DRAIN


@dataclass(frozen=True, slots=True)
class Worker:
    """What a worker shares with its supervisor and siblings (``celgate serve --workers N``).

    ``gateway_token`` authenticates drop-in agents' loopback calls, which may
    land on any worker; ``metrics_dir`` holds every worker's metric files, so
    any worker's ``/metrics`` shows the sum; ``supervisor_pid`` is signalled to
    fan a ``POST /admin/reload`` out to the other workers.
    """

    index: int
    supervisor_pid: int
    gateway_token: str
    metrics_dir: Path


async def stop_when_orphaned(worker: Worker, every: float = 1.0) -> None:
    """A worker whose supervisor died (SIGKILL, OOM kill) drains and exits rather than serve unsupervised."""
    while os.getppid() == worker.supervisor_pid:
        await asyncio.sleep(every)
    log.error("worker %d: the supervisor (pid %d) is gone; stopping", worker.index, worker.supervisor_pid)
    os.kill(os.getpid(), signal.SIGTERM)


class Lifecycle:
    def __init__(self) -> None:
        self.draining = False
        self._in_flight: set[asyncio.Task[object]] = set()

    def track(self, task: asyncio.Task[object]) -> None:
        self._in_flight.add(task)

    def untrack(self, task: asyncio.Task[object]) -> None:
        self._in_flight.discard(task)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def drain(self, seconds: float) -> None:
        """Let in-flight requests finish for ``seconds``, then end the rest (streams in-band)."""
        self.draining = True
        pending = set(self._in_flight)
        if pending:
            log.info("draining %d request(s) for up to %g s", len(pending), seconds)
            _, pending = await asyncio.wait(pending, timeout=seconds)
        for task in pending:
            task.cancel(DRAIN)
        if pending:
            await asyncio.wait(pending, timeout=_CANCEL_GRACE_SECONDS)
