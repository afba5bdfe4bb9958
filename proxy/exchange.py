"""What one request accumulates on its way through, for the access log and metrics."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Exchange"]


@dataclass(slots=True)
class Exchange:
    request_id: str
    route: str
    started: float  # time.perf_counter() at arrival
    model: str = ""
    principal: str = "-"
    stream: bool = False
    status: int = 0  # set once the response status is known (streams: at prepare)
