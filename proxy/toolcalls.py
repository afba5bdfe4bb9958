"""What every tool-call interceptor shares: the call it proposes, the hook that decides, the verdicts.

The chat completions and Responses interceptors each read their own wire
format; both turn what they read into a ``ProposedCall``, ask the
``ToolCallHook`` (the policy layer) and act on the ``ToolVerdict``.
"""

from __future__ import annotations

import enum
from typing import NamedTuple, Protocol

__all__ = [
    "ALLOWED",
    "ProposedCall",
    "StreamInterceptor",
    "ToolCallHook",
    "ToolCallRejected",
    "ToolVerdict",
    "Verdict",
    "intercept",
]


class Verdict(enum.Enum):
    ALLOW = "allow"
    STRIP = "strip"  # drop this call; the rest of the response goes on
    ERROR = "error"  # fail the whole response (the rule's ``action: error``)


class ToolVerdict(NamedTuple):
    verdict: Verdict
    message: str = ""


ALLOWED = ToolVerdict(Verdict.ALLOW)


class ProposedCall(NamedTuple):
    """A tool call a model proposes, as policy sees it (``tool.name``, ``tool.type``, ``tool.raw_arguments``)."""

    name: str
    raw_arguments: str
    call_id: str
    type: str = "function"


class ToolCallHook(Protocol):
    """What an interceptor asks about each tool call (the policy layer answers)."""

    def needs_arguments(self, name: str) -> bool: ...

    def decide(self, call: ProposedCall) -> ToolVerdict: ...

    def refuse(self, call: ProposedCall, reason: str) -> ToolVerdict:
        """Deny a call celgate cannot hold for a decision (too large), recorded like a policy denial."""
        ...


class ToolCallRejected(Exception):
    """A tool call whose rule says ``action: error``: the whole response fails."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StreamInterceptor(Protocol):
    """Raw SSE events in, what the client may see out."""

    def feed(self, raw: bytes) -> list[bytes]: ...

    def first_look(self, data: bytes) -> int:
        """The offset in ``data`` (whole events) of the first byte that may need a look; -1: none.

        Every event that ends at or before it would come back from ``feed`` as sent,
        changing nothing, so it may skip ``feed``.
        """
        ...

    def finish(self) -> list[bytes]: ...


def intercept(interceptor: StreamInterceptor | None, events: list[bytes]) -> list[bytes]:
    """What the client sees of one read's events: those before the interceptor's first look pass as sent."""
    clear = unlooked(interceptor, events)
    return events if interceptor is None else events[:clear] + looked(interceptor, events[clear:])


def unlooked(interceptor: StreamInterceptor | None, events: list[bytes]) -> int:
    """How many of one read's events, from the first, pass as sent without a look.

    One scan per read instead of one ``feed`` per event: no mark spans two events (marks hold
    no line break), so an event ending at or before the first mark holds none.
    """
    if interceptor is None or not events:
        return len(events)
    first = interceptor.first_look(b"".join(events) if len(events) > 1 else events[0])
    if first < 0:
        return len(events)
    clear, end = 0, 0
    for raw in events:
        end += len(raw)
        if end > first:
            break
        clear += 1
    return clear


def looked(interceptor: StreamInterceptor, events: list[bytes]) -> list[bytes]:
    """What the client sees of ``events``, each fed to the interceptor."""
    pieces: list[bytes] = []
    for raw in events:
        pieces += interceptor.feed(raw)
    return pieces
