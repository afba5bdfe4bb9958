"""Event-loop lag: how late the loop runs a timer, which is how long every request on it waited.

A task sleeps ``interval`` seconds and records how much later than asked it
woke. Anything that blocks the loop (a sync call in a handler or an agent, a
long CPU-bound parse) shows up here, in ``celgate_event_loop_lag_seconds``,
before it shows up as slow requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["LAG_INTERVAL_SECONDS", "sample_loop_lag"]

LAG_INTERVAL_SECONDS = 0.25  # 4 timers a second: negligible work, and a stall of 250 ms is seen within one period


async def sample_loop_lag(observe: Callable[[float], None], interval: float = LAG_INTERVAL_SECONDS) -> None:
    """Forever: sleep ``interval``, then ``observe`` how many seconds late the loop woke this task."""
    loop = asyncio.get_running_loop()
    while True:
        asked_at = loop.time()
        await asyncio.sleep(interval)
        observe(max(0.0, loop.time() - asked_at - interval))
