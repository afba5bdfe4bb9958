"""Reloading policies, agents and gateway tools on demand (SIGHUP, ``POST /admin/reload``), the way the watchers do.

Under ``--workers N`` a ``POST /admin/reload`` reaches one worker: it reloads
at once and answers, and signals the supervisor, which sends SIGHUP to every
worker, so no worker keeps the old policy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

from aiohttp import web

from .keys import AGENTS, ENFORCER, WORKER

__all__ = ["reload_everything", "reload_on_request"]

log = logging.getLogger("celgate")


async def reload_everything(app: web.Application) -> dict[str, Any]:
    """Re-read the policy directory (a broken set keeps the last good one) and rescan the agents."""
    outcome = await asyncio.to_thread(app[ENFORCER].source.reload)
    result: dict[str, Any] = {
        "policy": {
            "ok": outcome.ok,
            "version": outcome.policy.version,
            "error": str(outcome.error) if outcome.error is not None else None,
        },
        "agents": None,
        "tools": None,
    }
    registry = app.get(AGENTS)
    if registry is not None:
        await registry.start()
        result["agents"] = {"loaded": registry.names(), "failed": sorted(f.agent for f in registry.failures())}
        result["tools"] = {
            "loaded": [tool["name"] for tool in registry.tools()],
            "failed": [failure.name for failure in registry.tool_failures()],
        }
    log.info("reloaded on request: %s", result)
    return result


async def reload_on_request(app: web.Application) -> dict[str, Any]:
    """``POST /admin/reload``: reload this process now; a worker also has its supervisor reload the others."""
    result = await reload_everything(app)
    worker = app.get(WORKER)
    if worker is not None:
        os.kill(worker.supervisor_pid, signal.SIGHUP)
    result["other_workers"] = "signalled" if worker is not None else "none"
    return result
