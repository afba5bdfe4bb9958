"""The one exception a drop-in run raises to the proxy.

The proxy turns it into OpenAI error JSON (or an in-band SSE error once a
stream has started); adapters never build error JSON themselves.
"""

from __future__ import annotations

__all__ = ["AgentRunError"]


class AgentRunError(Exception):
    """A drop-in agent run failed; ``status``/``type``/``code`` are the HTTP error to return."""

    def __init__(self, status: int, type: str, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"AgentRunError({self.status}, {self.type!r}, {self.code!r}, {self.message!r})"
