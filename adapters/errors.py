"""Everything that goes wrong in adapters, typed where it is first known.

A failed run raises ``AgentRunError`` (``MessageError`` for a malformed
request), which carries the HTTP status, ``type`` and ``code`` the proxy
returns: the proxy turns it into OpenAI error JSON (or an in-band SSE error
once a stream has started) without re-deriving anything, and adapters never
build error JSON themselves. A drop-in that cannot be served raises
``LoadError`` while loading; the registry keeps it as an ``AgentLoadFailure``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["AgentLoadFailure", "AgentRunError", "LoadError", "MessageError"]


class AgentRunError(Exception):
    """A drop-in agent run failed; ``status``/``type``/``code`` are the HTTP error to return."""

    def __init__(self, status: int, type: str, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.type!r}, {self.code!r}, {self.message!r})"


class MessageError(AgentRunError):
    """The request's conversation (chat ``messages``, Responses ``input``) cannot be given to the agent: a 400."""

    def __init__(self, message: str, code: str = "invalid_messages") -> None:
        super().__init__(400, "invalid_request_error", code, message)


class LoadError(Exception):
    """A drop-in cannot be served; ``kind`` is the failure label shown and counted.

    ``file`` names the file to fix when it is not the drop-in's ``agent.py``.
    """

    def __init__(self, kind: str, message: str, file: Path | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.file = file


@dataclass(frozen=True, slots=True)
class AgentLoadFailure:
    """One recorded load failure of drop-in ``agent``; ``file`` is the file to fix.

    ``message`` may be a whole traceback; ``summary`` is its one-line reason
    (an error response says that much and points at ``/admin/agents/errors``).
    """

    agent: str
    kind: str
    message: str
    file: Path
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def summary(self) -> str:
        """The message's last line: for a traceback, the exception itself."""
        return self.message.rstrip().rpartition("\n")[2]

    def as_json(self) -> dict[str, Any]:
        """This failure as listed by ``GET /admin/agents/errors``."""
        return {
            "agent": self.agent,
            "kind": self.kind,
            "message": self.message,
            "file": str(self.file),
            "time": self.time.isoformat(timespec="seconds"),
        }
