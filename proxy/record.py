"""What one request accumulates on its way through, for the access log and metrics."""

from __future__ import annotations

from dataclasses import dataclass

from .limits import Slots

__all__ = ["RequestRecord"]


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    route: str  # the route's metrics label
    started: float  # time.perf_counter() at arrival
    model: str = ""
    principal: str = "-"
    stream: bool = False
    status: int = 0  # set once the response status is known (streams: at prepare)
    slots: Slots | None = None  # the concurrency slots taken at admission, given back when the request ends
