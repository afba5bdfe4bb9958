"""Everything that goes wrong in adapters, typed where it is first known.

A failed run raises ``AgentRunError`` (``MessageError`` for a malformed
request), which carries the HTTP status, ``type`` and ``code`` the proxy
returns: the proxy turns it into OpenAI error JSON (or an in-band SSE error
once a stream has started) without re-deriving anything, and adapters never
build error JSON themselves. A drop-in that cannot be served raises
``LoadError`` while loading; the registry keeps it as an ``AgentLoadFailure``
(a gateway tool file as a ``ToolLoadFailure``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

__all__ = [
    "AgentLoadFailure",
    "AgentRunError",
    "LoadError",
    "LoadFailure",
    "MessageError",
    "ToolFailure",
    "ToolLoadFailure",
]


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


class ToolFailure(Exception):
    """A gateway tool could not do its job (HTTP error status, timeout, oversized reply).

    Not a crash: the model gets ``message`` as the tool's result, and the
    execution is recorded as an error.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LoadError(Exception):
    """A drop-in cannot be served; ``kind`` is the failure label shown and counted.

    ``file`` names the file to fix when it is not the drop-in's ``agent.py``;
    ``line`` and ``field`` point into a declarative (YAML) file.
    """

    def __init__(
        self, kind: str, message: str, file: Path | None = None, *, line: int | None = None, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.file = file
        self.line = line
        self.field = field


@dataclass(frozen=True, slots=True)
class LoadFailure:
    """One recorded load failure of ``name`` (a drop-in or a gateway tool); ``file`` is the file to fix.

    ``message`` may be a whole traceback; ``summary`` is its one-line reason
    (an error response says that much and points at the errors endpoint).
    ``line`` and ``field`` are set for declarative (YAML) files.
    """

    name: str
    kind: str
    message: str
    file: Path
    line: int | None = None
    field: str | None = None
    time: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def of(cls, name: str, error: LoadError, default_file: Path) -> Self:
        return cls(name, error.kind, error.message, error.file or default_file, error.line, error.field)

    @property
    def summary(self) -> str:
        """The message's last line: for a traceback, the exception itself."""
        return self.message.rstrip().rpartition("\n")[2]

    def as_json(self) -> dict[str, Any]:
        """This failure as listed by ``GET /admin/agents/errors`` and ``/admin/tools/errors``."""
        return {
            self.label: self.name,
            "kind": self.kind,
            "message": self.message,
            "file": str(self.file),
            "line": self.line,
            "field": self.field,
            "time": self.time.isoformat(timespec="seconds"),
        }

    @property
    def label(self) -> str:
        return "name"


class AgentLoadFailure(LoadFailure):
    """A drop-in agent that failed to load (listed by ``/admin/agents/errors``)."""

    __slots__ = ()

    @property
    def label(self) -> str:
        return "agent"

    @property
    def agent(self) -> str:
        return self.name


class ToolLoadFailure(LoadFailure):
    """A gateway tool file that failed to load (listed by ``/admin/tools/errors``)."""

    __slots__ = ()

    @property
    def label(self) -> str:
        return "tool"
