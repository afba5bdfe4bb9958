"""Concurrency limits: load is shed with a 429, never queued without bound.

Two counts, each global and per principal: requests in flight, and streams
in flight. The global ceilings are settings (``--max-concurrent-requests``,
``--max-concurrent-streams``; 0 = no limit); a principal's own ceilings come
from its policy attributes ``max_concurrent_requests`` /
``max_concurrent_streams``. A request takes its slots at admission and gives
them back when its response is done (``Slots.release``, called by the
request guard).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from celgate.policy import Principal

from .errors import TooManyRequests

__all__ = ["Limits", "Slots"]

_RETRY_AFTER_SECONDS = 1


@dataclass(slots=True)
class Slots:
    """What one request holds; releasing twice is harmless."""

    limits: Limits
    principal: str
    stream: bool
    held: bool = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.limits.give_back(self)


@dataclass(slots=True)
class Limits:
    max_requests: int
    max_streams: int
    requests: Counter[str] = field(default_factory=Counter)
    streams: Counter[str] = field(default_factory=Counter)
    total_requests: int = 0
    total_streams: int = 0

    def take(self, principal: Principal, stream: bool) -> Slots:
        """Take a request slot (and a stream slot for a stream) or raise ``TooManyRequests`` (429)."""
        self._check(
            "requests",
            self.total_requests,
            self.max_requests,
            self.requests[principal.id],
            _own(principal, "max_concurrent_requests"),
        )
        if stream:
            self._check(
                "streams",
                self.total_streams,
                self.max_streams,
                self.streams[principal.id],
                _own(principal, "max_concurrent_streams"),
            )
            self.total_streams += 1
            self.streams[principal.id] += 1
        self.total_requests += 1
        self.requests[principal.id] += 1
        return Slots(self, principal.id, stream)

    def give_back(self, slots: Slots) -> None:
        self.total_requests -= 1
        _decrement(self.requests, slots.principal)
        if slots.stream:
            self.total_streams -= 1
            _decrement(self.streams, slots.principal)

    @staticmethod
    def _check(kind: str, total: int, ceiling: int, own: int, own_ceiling: int) -> None:
        if ceiling and total >= ceiling:
            raise _refusal(kind, "global", ceiling)
        if own_ceiling and own >= own_ceiling:
            raise _refusal(kind, "principal", own_ceiling)


def _refusal(kind: str, scope: str, ceiling: int) -> TooManyRequests:
    whose = " for this principal" if scope == "principal" else ""
    return TooManyRequests(
        f"celgate: too many concurrent {kind}{whose} (limit {ceiling}); retry shortly",
        scope=scope,
        kind=kind,
        retry_after=_RETRY_AFTER_SECONDS,
    )


def _own(principal: Principal, attribute: str) -> int:
    value = principal.attributes.get(attribute)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
