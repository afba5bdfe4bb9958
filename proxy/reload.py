"""Reloading policies, agents and gateway tools on demand (SIGHUP, ``POST /admin/reload``), the way the watchers do."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from .keys import AGENTS, ENFORCER

__all__ = ["reload_everything"]

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
