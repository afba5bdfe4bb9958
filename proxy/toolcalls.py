"""What every tool-call interceptor shares: the call it proposes, the hook that decides, the verdicts.

The chat completions and Responses interceptors each read their own wire
format; both turn what they read into a ``ProposedCall``, ask the
``ToolCallHook`` (the policy layer) and act on the ``ToolVerdict``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

__all__ = ["ALLOWED", "ProposedCall", "StreamInterceptor", "ToolCallHook", "ToolCallRejected", "ToolVerdict", "Verdict"]


class Verdict(enum.Enum):
    ALLOW = "allow"
    STRIP = "strip"  # drop this call; the rest of the response goes on
    ERROR = "error"  # fail the whole response (the rule's ``action: error``)


@dataclass(frozen=True, slots=True)
class ToolVerdict:
    verdict: Verdict
    message: str = ""


ALLOWED = ToolVerdict(Verdict.ALLOW)


@dataclass(frozen=True, slots=True)
class ProposedCall:
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

    def finish(self) -> list[bytes]: ...
